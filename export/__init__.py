"""Stage 1: Hugging Face checkpoint -> validated fp32 ONNX package (needs the ``export`` extra).

The public names load on first use (PEP 562): importing a light submodule (the family tables the catalog
reads) must not pull in the export pipeline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from polyglot_onnx.export.pipeline import ExportOptions, export_package
    from polyglot_onnx.export.validate import Tolerance

__all__ = ["ExportOptions", "Tolerance", "export_package"]
_WHERE = {"ExportOptions": "pipeline", "export_package": "pipeline", "Tolerance": "validate"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'polyglot_onnx.export' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"polyglot_onnx.export.{_WHERE[name]}"), name)
