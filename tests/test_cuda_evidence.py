"""Drift evidence per provider: `drift --provider cuda` records its own, and auto on CUDA reads it (no GPU needed)."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from polyglot_onnx import manifest as mf
from polyglot_onnx.errors import InputError
from polyglot_onnx.quantize.drift import DriftOptions, run_drift
from polyglot_onnx.runtime.package import choose_variant


def _with_evidence(manifest: mf.Manifest, name: str, **by_provider: bool) -> mf.Manifest:
    variant = manifest.variants[name]
    validation = {k: v for k, v in variant.validation.items() if not k.startswith("drift")}
    for provider, passed in by_provider.items():
        validation[mf.drift_key(provider)] = {"passed": passed, "graph_sha256": variant.files[0].sha256}
    return replace(manifest, variants=manifest.variants | {name: replace(variant, validation=validation)})


def test_auto_on_cuda_reads_the_cuda_evidence(quantized, caplog):
    manifest = mf.read_manifest(quantized["tiny-bert"])
    assert choose_variant(_with_evidence(manifest, "fp16", cpu=True, cuda=True), "auto", "cuda").name == "fp16"
    # passed on the CPU, failed where it runs: auto on CUDA must not pick it; auto on the CPU is unaffected
    failed_on_gpu = _with_evidence(manifest, "fp16", cpu=True, cuda=False)
    with caplog.at_level(logging.WARNING, logger="polyglot_onnx"):
        assert choose_variant(failed_on_gpu, "auto", "cuda").name == "fp32"
    assert "failed its drift gate on cuda" in caplog.text
    # only CPU evidence: used, and said to come from the CPU
    with caplog.at_level(logging.INFO, logger="polyglot_onnx"):
        assert choose_variant(_with_evidence(manifest, "fp16", cpu=True), "auto", "cuda").name == "fp16"
    assert "drift evidence from cpu only" in caplog.text
    variant = _with_evidence(manifest, "fp16", cpu=False, cuda=True).variants["fp16"]
    assert variant.evidence_for("cuda")[0] == "cuda" and variant.evidence_for("cpu") == ("cpu", variant.drift())


def test_drift_refuses_an_unknown_provider_in_one_line(quantized):
    with pytest.raises(InputError, match=r"^unknown provider 'tpu': choose cpu or cuda$"):
        run_drift(quantized["tiny-bert"], DriftOptions(provider="tpu", show_progress=False))


def test_drift_on_cuda_without_the_provider_is_an_error_not_a_cpu_run(quantized):
    import onnxruntime as ort

    from polyglot_onnx.errors import ProviderError

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has the CUDA provider: the error path is for machines without it")
    with pytest.raises(ProviderError, match="CUDA"):
        run_drift(quantized["tiny-bert"], DriftOptions(provider="cuda", variants=("fp16",), show_progress=False))


def test_a_malformed_cuda_evidence_is_refused_when_the_manifest_is_read(quantized, tmp_path):
    import json
    import shutil

    pkg = shutil.copytree(quantized["tiny-bert"], tmp_path / "pkg")
    raw = json.loads((pkg / mf.MANIFEST_NAME).read_text(encoding="utf-8"))
    raw["variants"]["fp16"]["validation"]["drift_cuda"] = {"passed": "yes"}
    (pkg / mf.MANIFEST_NAME).write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(Exception, match=r"validation\.drift_cuda\.passed"):
        mf.read_manifest(pkg)
