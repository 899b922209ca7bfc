"""Evidence survives interruption: quantize killed (SIGKILL) at every stage never leaves a variant
listed with evidence its build did not produce, auto never picks an unchecked variant, and the
next run removes what the killed one left behind."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Each stage: the module attribute to replace, and whether the kill comes before or after it runs.
STAGES = {
    "build": ("polyglot_onnx.quantize.package:_build", "before"),
    "smoke-run": ("polyglot_onnx.quantize.package:smoke_run", "after"),  # temp folder full, nothing listed
    "listed": ("polyglot_onnx.quantize.package:write_variant", "after"),  # listed, drift not run
    "drift": ("polyglot_onnx.quantize.drift:run_drift", "after"),  # measured, not recorded
    "manifest-write": ("polyglot_onnx.manifest:os.replace", "before"),  # a temp manifest on disk
}

KILLER = textwrap.dedent(
    """
    import importlib, os, signal, sys
    target, when, pkg = sys.argv[1], sys.argv[2], sys.argv[3]
    module_name, attr = target.split(":")
    module = importlib.import_module(module_name)
    owner, name = (module, attr) if "." not in attr else (getattr(module, attr.split(".")[0]), attr.split(".")[1])
    original = getattr(owner, name)
    calls = {"n": 0}

    def die(*args, **kwargs):
        calls["n"] += 1
        # os.replace also serves the final file renames: kill at the manifest's
        if name == "replace" and not str(args[0]).endswith(".manifest.json.tmp"):
            return original(*args, **kwargs)
        if when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, name, die)
    from polyglot_onnx.quantize import QuantizeOptions, quantize_package
    quantize_package(pkg, "int8", QuantizeOptions(show_progress=False, overwrite=True, corpus=sys.argv[4]))
    """
)
# A small drift corpus keeps each killed-and-resumed build to a few seconds.
SMALL_CORPUS = [
    {"text": "El gato duerme en la casa grande.", "language": "spa"},
    {"text": "Der Hund spielt im Garten mit dem Ball.", "language": "deu"},
    {"text": "Кошка спит на тёплом окне весь день.", "language": "rus"},
    {"text": "東京は日本の首都です。", "language": "jpn"},
    {"text": "La ville est belle au printemps.", "language": "fra"},
    {"text": "مرحبا بالعالم الجميل", "language": "ara"},
]


def _leftovers(pkg: Path) -> list[str]:
    return sorted(p.name for p in pkg.iterdir() if p.name.startswith(".") and ".tmp" in p.name)


@pytest.fixture(scope="module")
def checked_package(quantized, tmp_path_factory) -> Path:
    """A package whose int8 passed its drift gate: what a killed rebuild must not misrepresent."""
    pkg = tmp_path_factory.mktemp("interrupt") / "base"
    shutil.copytree(quantized["tiny-bert"], pkg)
    return pkg


@pytest.mark.parametrize("stage", list(STAGES))
def test_quantize_killed_at_every_stage(checked_package, tmp_path, stage, caplog):
    from polyglot_onnx import Embedder
    from polyglot_onnx.manifest import read_manifest
    from polyglot_onnx.quantize import QuantizeOptions, quantize_package
    from polyglot_onnx.runtime.package import has_own_evidence

    pkg = tmp_path / "pkg"
    shutil.copytree(checked_package, pkg)
    old_int8 = read_manifest(pkg).variants["int8"]
    target, when = STAGES[stage]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in SMALL_CORPUS), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, target, when, str(pkg), str(corpus)], capture_output=True, text=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]

    manifest = read_manifest(pkg)  # never half-written
    int8 = manifest.variants.get("int8")
    if int8 is not None and int8.files[0].sha256 != old_int8.files[0].sha256:
        assert not has_own_evidence(int8), f"{stage}: a rebuilt int8 carries evidence it did not earn"
    if int8 is not None and int8.validation.get("drift"):
        assert has_own_evidence(int8)
    with caplog.at_level(logging.WARNING, logger="polyglot_onnx"):
        auto = Embedder.load(pkg, provider="cpu")
    if int8 is None or not has_own_evidence(int8):
        assert auto.variant == "fp32"
        if int8 is not None:
            assert "no drift evidence" in caplog.text
    else:
        assert auto.variant == "int8"

    # the next run cleans up and completes; the package is whole again
    quantize_package(pkg, "int8", QuantizeOptions(show_progress=False, overwrite=True, corpus=str(corpus)))
    assert _leftovers(pkg) == []
    final = read_manifest(pkg).variants["int8"]
    assert has_own_evidence(final) and final.validation["drift"]["passed"]
    assert Embedder.load(pkg, provider="cpu").variant == "int8"


def test_stale_temporaries_are_named_when_removed(checked_package, tmp_path):
    from polyglot_onnx.quantize.package import remove_stale_temporaries

    pkg = tmp_path / "pkg"
    shutil.copytree(checked_package, pkg)
    (pkg / ".int8.tmp-abc123").mkdir()
    (pkg / ".int8.tmp-abc123" / "model.int8.onnx").write_bytes(b"partial")
    (pkg / ".manifest.json.tmp").write_text("{", encoding="utf-8")
    assert sorted(remove_stale_temporaries(pkg)) == [".int8.tmp-abc123", ".manifest.json.tmp"]
    assert _leftovers(pkg) == [] and json.loads((pkg / "manifest.json").read_text())["variants"]["int8"]
