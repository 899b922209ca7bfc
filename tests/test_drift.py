"""The drift checker: corpus, metrics, gate, localization, reports and the evidence in the manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from conftest import CORPUS
from polyglot_onnx import Embedder
from polyglot_onnx.cli import main
from polyglot_onnx.errors import InputError
from polyglot_onnx.graph_toolkit import layer_index, weight_matmuls
from polyglot_onnx.manifest import read_manifest
from polyglot_onnx.quantize import DriftOptions, Int8Options, record, run_drift
from polyglot_onnx.quantize.corpus import load_corpus, parse_corpus
from polyglot_onnx.quantize.graphs import layer_outputs
from polyglot_onnx.quantize.int8 import quantize_dynamic_int8
from polyglot_onnx.quantize.metrics import mask_agreement
from polyglot_onnx.quantize.package import write_variant

QUIET = DriftOptions(show_progress=False)
CORRUPT_LAYER = 1


def test_builtin_corpus_covers_languages_and_scripts_and_is_not_training_text():
    corpus = load_corpus()
    languages: dict[str, int] = {}
    for sample in corpus.samples:
        languages[sample.language] = languages.get(sample.language, 0) + 1
    assert len(languages) >= 20 and min(languages.values()) >= 20
    assert len({s.script for s in corpus.samples}) >= 8
    training = set(CORPUS.read_text(encoding="utf-8").splitlines())
    assert not training & {s.text for s in corpus.samples}


def test_user_corpus_text_and_jsonl(tmp_path):
    plain = parse_corpus(b"uno dos tres\n\nquatre cinq six\n", "plain")
    assert [s.text for s in plain.samples] == ["uno dos tres", "quatre cinq six"]
    assert {s.language for s in plain.samples} == {"und"}
    jsonl = parse_corpus('{"text": "Bonjour à tous", "language": "fra"}\n'.encode(), "jsonl")
    assert jsonl.samples[0].language == "fra"
    for raw, match in [
        (b"", "has no text"),
        (b"\xff\xfe\x00", "is not UTF-8"),
        (b'{"text": 3}\n', 'has no "text" string'),
        (b'{"text": "a"\n', "is not valid JSON"),
    ]:
        with pytest.raises(InputError, match=match):
            parse_corpus(raw, "bad")


def test_mask_agreement_metrics():
    ref = np.array([5.0, 1.0, 0.0, -1.0, -2.0, -3.0])
    assert mask_agreement(ref, ref) == (1.0, 1.0, 0.0, 1.0)
    agree, overlap, kl, exact = mask_agreement(ref, ref[::-1].copy())
    assert agree == exact == 0.0 and overlap == pytest.approx(4 / 5) and kl > 1.0
    tie = np.array([2.0, 2.0 - 1e-3, 0.0])  # the reference cannot tell the first two apart
    assert mask_agreement(tie, tie[[1, 0, 2]])[::3] == (1.0, 0.0)


def test_layer_outputs_one_per_layer(tiny_models):
    for name in ("tiny-bert", "tiny-modernbert"):
        pkg = tiny_models[name].package
        model = onnx.load(str(pkg / "model.onnx"))
        assert len(layer_outputs(model)) == read_manifest(pkg).model.num_layers


@pytest.fixture(scope="module")
def corrupted(tiny_models, tmp_path_factory) -> Path:
    """tiny-modernbert whose int8 variant was built from a graph with one layer-1 weight broken."""
    pkg = tmp_path_factory.mktemp("corrupt") / "pkg"
    shutil.copytree(tiny_models["tiny-modernbert"].package, pkg)
    model = onnx.load(str(pkg / "model.onnx"))
    node = next(n for n in weight_matmuls(model) if layer_index(n) == CORRUPT_LAYER)
    init = next(i for i in model.graph.initializer if i.name == node.input[1])
    rng = np.random.default_rng(0)
    weight = numpy_helper.to_array(init)
    broken = rng.permutation(weight.ravel()).reshape(weight.shape) * 50  # scrambled and scaled
    init.CopyFrom(numpy_helper.from_array(broken.astype(np.float32), init.name))
    quantized, details = quantize_dynamic_int8(model, Int8Options())
    write_variant(pkg, "int8", "model.int8.onnx", quantized, details)
    return pkg


def test_gate_fails_and_localizes_the_corrupted_layer(corrupted):
    report = run_drift(corrupted, QUIET)
    result = report.variants["int8"]
    assert not report.passed and not result["passed"]
    languages = {f["group"] for f in result["failures"]}
    assert "overall" in languages and any(g.startswith("language ") for g in languages)
    assert {f["variant"] for f in result["failures"]} == {"int8"}
    loc = result["localization"]
    assert loc["diverges_at"] == CORRUPT_LAYER
    assert loc["layers"][0]["sqnr_db"] > 30 > loc["layers"][CORRUPT_LAYER]["sqnr_db"]


def test_drift_cli_exit_code_reports_and_plot(corrupted, tmp_path, capsys):
    md, js = tmp_path / "r" / "drift.md", tmp_path / "r" / "drift.json"
    code = main(["drift", str(corrupted), "--markdown", str(md), "--json", str(js), "--no-record", "--quiet"])
    captured = capsys.readouterr()
    assert code == 1
    assert "int8 fails on language" in captured.err and "sentence_cosine" in captured.err + captured.out
    assert f"first diverging layer {CORRUPT_LAYER}" in captured.out
    text = md.read_text(encoding="utf-8")
    assert "| language |" in text and "**first diverging layer: 1**" in text and "![per-language drift](drift.png)" in text
    assert (tmp_path / "r" / "drift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(js.read_text(encoding="utf-8"))
    assert data["passed"] is False and "by_language" in data["variants"]["int8"]
    # thresholds are overridable: a gate loose enough lets the same variant pass
    loose = [f"--threshold={m}={v}" for m, v in
             [("sentence_cosine_p5", -1), ("sentence_cosine_min", -1), ("top1_agreement", 0), ("top5_overlap", 0),
              ("kl_mean", 1e9)]]
    assert main(["drift", str(corrupted), "--no-record", "--quiet", "--localize", "never", *loose]) == 0


def test_results_go_into_the_manifest_and_auto_skips_a_failed_variant(corrupted, tmp_path, capsys):
    pkg = tmp_path / "pkg"
    shutil.copytree(corrupted, pkg)
    record(pkg, run_drift(pkg, DriftOptions(show_progress=False, localize="never")))
    drift = read_manifest(pkg).variants["int8"].validation["drift"]
    assert drift["passed"] is False and drift["failures"]
    assert main(["info", str(pkg)]) == 0
    assert "drift on cpu vs fp32" in capsys.readouterr().out
    embedder = Embedder.load(pkg, provider="cpu")
    assert embedder.variant == "fp32"  # auto does not pick a variant known to be inaccurate
    assert Embedder.load(pkg, provider="cpu", variant="int8").describe()["drift"]["passed"] is False


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-modernbert"])
def test_torch_reference_checks_and_localizes_fp32_too(quantized, name):
    options = DriftOptions(reference="torch", variants=("fp32", "int8"), localize="always", show_progress=False)
    report = run_drift(quantized[name], options)
    assert report.passed, report.failures
    fp32 = report.variants["fp32"]
    assert fp32["overall"]["token_max_abs"] < 1e-4
    layers = fp32["localization"]["layers"]  # fp32 graph vs PyTorch hidden_states, layer by layer
    assert fp32["localization"]["reference"] == "PyTorch" and len(layers) == read_manifest(quantized[name]).model.num_layers
    assert min(entry["sqnr_db"] for entry in layers) > 100
    assert report.variants["int8"]["localization"]["reference"] == "fp32 graph"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (DriftOptions(thresholds={"top1_agreement": 1.5}, show_progress=False), "must lie in"),
        (DriftOptions(thresholds={"kl_mean": -1}, show_progress=False), "must be >= 0"),
        (DriftOptions(thresholds={"accuracy": 0.5}, show_progress=False), "unknown drift metric"),
        (DriftOptions(reference="onnx", show_progress=False), "unknown reference"),
        (DriftOptions(variants=("int4",), show_progress=False), "not in this package"),
        (DriftOptions(variants=("fp32",), show_progress=False), "cannot be checked against itself"),
        (DriftOptions(corpus="/nope.txt", show_progress=False), "does not exist"),
    ],
)
def test_bad_drift_requests(quantized, options, match):
    with pytest.raises(InputError, match=match):
        run_drift(quantized["tiny-bert"], options)


def test_fp32_only_package_says_what_to_do(tiny_models):
    with pytest.raises(InputError, match="only the fp32 variant.*polyglot-onnx quantize"):
        run_drift(tiny_models["tiny-bert"].package, QUIET)


def test_cli_threshold_syntax_error(quantized, capsys):
    assert main(["drift", str(quantized["tiny-bert"]), "--threshold", "top1", "--quiet"]) == 1
    assert "is not METRIC=NUMBER" in capsys.readouterr().err
