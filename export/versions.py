"""The oldest torch and transformers the export is tested on, refused below in one line.

CI exports the tiny BERT and ModernBERT fixtures on these floors (scripts/check_floor.sh) as well as on the
pinned versions (scripts/constraints.txt). Below them the export fails deep inside torch.export or
transformers (transformers 5.0's ModernBERT cannot take a per-layer-type mask mapping), so it is refused
before any work, naming the version and the fix. pyproject.toml's [export] extra states the same floors
(a test keeps them equal).
"""

from __future__ import annotations

import re

from polyglot_onnx.errors import ExportError

FLOORS: dict[str, tuple[int, int]] = {"torch": (2, 9), "transformers": (5, 1)}


def release(version: str) -> tuple[int, int]:
    """(major, minor) of a version string such as '2.11.0+cu130' or '5.1.0.dev0'."""
    found = re.match(r"(\d+)\.(\d+)", version)
    if not found:
        raise ExportError(f"cannot read the version {version!r}: reinstall the package")
    return int(found.group(1)), int(found.group(2))


def check_versions(installed: dict[str, str] | None = None) -> None:
    """Raise ExportError if an installed torch / transformers is older than its tested floor."""
    if installed is None:
        import torch
        import transformers

        installed = {"torch": torch.__version__, "transformers": transformers.__version__}
    for name, floor in FLOORS.items():
        version = installed.get(name)
        if version is not None and release(version) < floor:
            need = ".".join(map(str, floor))
            raise ExportError(
                f"{name} {version} is older than {need}, the oldest the export is tested on: "
                f"pip install '{name}>={need}'"
            )
