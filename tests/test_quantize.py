"""INT8 / FP16 variants: build, share weights once, keep fused ops, load, and carry drift evidence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from conftest import attention_nodes, sample_lines
from polyglot_onnx import Embedder, FillMask
from polyglot_onnx.errors import InputError, QuantizeError
from polyglot_onnx.graph_toolkit import op_histogram
from polyglot_onnx.manifest import read_manifest
from polyglot_onnx.quantize import Int8Options, QuantizeOptions, quantize_package
from polyglot_onnx.quantize.graphs import fused_counts

QUIET = QuantizeOptions(show_progress=False)


def _model(pkg: Path, variant: str) -> onnx.ModelProto:
    return onnx.load(str(pkg / read_manifest(pkg).variants[variant].graph_file))


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-modernbert", "tiny-encoder"])
def test_variants_build_keep_fused_ops_and_pass_their_gates(quantized, tiny_models, name):
    pkg = quantized[name]
    manifest = read_manifest(pkg)
    assert set(manifest.variants) == {"fp32", "int8", "fp16"}
    fp32 = fused_counts(_model(pkg, "fp32"))
    assert fp32["Attention"] == attention_nodes(tiny_models[name])
    for variant in ("int8", "fp16"):
        assert fused_counts(_model(pkg, variant)) == fp32
        drift = manifest.variants[variant].validation["drift"]
        assert drift["passed"], drift["failures"]
        assert drift["corpus"]["languages"] >= 20 and drift["corpus"]["scripts"] >= 8
        assert drift["overall"]["nonfinite"] == 0
        assert manifest.variants[variant].total_size < manifest.variants["fp32"].total_size


def test_int8_embedding_table_is_block_quantized_and_shared_with_the_head(quantized):
    pkg = quantized["tiny-modernbert"]
    model = _model(pkg, "int8")
    ops = op_histogram(model)
    assert ops["com.microsoft.GatherBlockQuantized"] == 1 and ops["com.microsoft.MatMulNBits"] == 1 and ops["com.microsoft.MatMulIntegerToFloat"] > 0
    lookup = next(n for n in model.graph.node if n.op_type == "GatherBlockQuantized")
    head = next(n for n in model.graph.node if n.op_type == "MatMulNBits")
    assert lookup.input[0] == head.input[1]  # one uint8 table for lookup and decoder
    # int8 compute in the head; without it onnxruntime dequantizes the whole table per call
    assert {a.name: a.i for a in head.attribute}["accuracy_level"] == 4
    inits = {i.name: i for i in model.graph.initializer}
    table = inits[lookup.input[0]]
    vocab, hidden = read_manifest(pkg).model.vocab_size, read_manifest(pkg).model.hidden_size
    assert table.data_type == TensorProto.UINT8 and int(np.prod(table.dims)) == vocab * hidden
    # no float copy of the [vocab, hidden] matrix is left anywhere
    floats = [i for i in model.graph.initializer if i.data_type == TensorProto.FLOAT]
    assert not [i for i in floats if sorted(i.dims) == sorted([vocab, hidden])]
    extra = read_manifest(pkg).variants["int8"].extra["embedding"]
    assert extra["quantized"] and extra["tied_heads"] == 1 and extra["bytes_after"] < extra["bytes_before"] / 3


def test_fp16_keeps_io_in_fp32_and_no_fp32_islands_in_the_encoder(quantized):
    model = _model(quantized["tiny-modernbert"], "fp16")
    for value in list(model.graph.input) + list(model.graph.output):
        assert value.type.tensor_type.elem_type in (TensorProto.INT64, TensorProto.FLOAT)
    inits = {i.name: i.data_type for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    norms = [n for n in model.graph.node if n.op_type == "LayerNormalization"]
    # LayerNorm runs in fp16 (onnxruntime accumulates its statistics in fp32): no Cast before or after it
    assert norms and all(inits.get(n.input[1]) == TensorProto.FLOAT16 for n in norms)
    assert not [n for n in norms if producers.get(n.input[0]) is not None and producers[n.input[0]].op_type == "Cast"]
    # each fp32 tensor is cast once, however many nodes read it (a graph output keeps its own name)
    outputs = {o.name for o in model.graph.output}
    casts = [(n.input[0], n.attribute[0].i) for n in model.graph.node if n.op_type == "Cast" and n.output[0] not in outputs]
    assert len(casts) == len(set(casts))
    big = [i for i in model.graph.initializer if int(np.prod(i.dims)) >= 64 * 64]
    assert big and all(i.data_type == TensorProto.FLOAT16 for i in big)
    ops = op_histogram(model)
    assert ops["RotaryEmbedding"] == 6 and ops["Cos"] == ops["Sin"] > 0


def test_int8_runs_through_the_runtime_and_auto_picks_it_on_cpu(quantized, mlm):
    pkg = quantized[mlm.name]
    auto = FillMask.load(pkg, provider="cpu")
    assert auto.variant == "int8"
    fp32 = FillMask.load(pkg, provider="cpu", variant="fp32")
    texts = [f"{line.split()[0]} {mlm.mask_token} {' '.join(line.split()[2:])}" for line in sample_lines(8)]
    agree = [a[0]["token"] == b[0]["token"] for a, b in zip(auto(texts), fp32(texts))]
    assert np.mean(agree) >= 0.75
    emb8 = Embedder.load(pkg, provider="cpu").encode(sample_lines(10))
    emb32 = Embedder.load(pkg, provider="cpu", variant="fp32").encode(sample_lines(10))
    assert (emb8 * emb32).sum(-1).min() > 0.999
    assert auto.describe()["drift"]["passed"] is True


def test_fp16_is_refused_on_cpu_with_advice(quantized):
    with pytest.raises(InputError, match="fp16 is a CUDA variant.*int8' or 'fp32"):
        Embedder.load(quantized["tiny-bert"], provider="cpu", variant="fp16")


def test_static_int8_builds_and_passes(tiny_models, tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(tiny_models["tiny-bert"].package, pkg)
    manifest = quantize_package(pkg, ["int8-static"], QUIET)
    variant = manifest.variants["int8-static"]
    assert variant.extra["method"] == "static-qdq" and variant.validation["drift"]["passed"]
    assert op_histogram(_model(pkg, "int8-static"))["QuantizeLinear"] > 0
    assert Embedder.load(pkg, provider="cpu", variant="int8-static").encode("hola").shape == (64,)


def test_mixed_precision_meets_a_budget_plain_int8_misses(tiny_models, tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(tiny_models["tiny-bert"].package, pkg)
    loose = quantize_package(pkg, "int8", QuantizeOptions(show_progress=False, drift=False, max_drift=0.5))
    plain = loose.variants["int8"].extra["mixed_precision"]
    assert plain["fp32_nodes"] == [] and plain["drift_plain_int8"] <= 0.5
    budget = plain["drift_plain_int8"] * 0.6
    options = QuantizeOptions(show_progress=False, overwrite=True, max_drift=budget)
    manifest = quantize_package(pkg, "int8", options)
    mixed = manifest.variants["int8"].extra["mixed_precision"]
    assert mixed["drift_plain_int8"] > budget >= mixed["drift_mixed"]
    assert mixed["fp32_nodes"] and mixed["bytes_mixed"] > mixed["bytes_plain_int8"]
    assert {"latency_ms_plain_int8", "latency_ms_mixed"} <= set(mixed)
    assert manifest.variants["int8"].validation["drift"]["passed"]


def test_unreachable_budget_is_a_clear_error(tiny_models, tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(tiny_models["tiny-bert"].package, pkg)
    with pytest.raises(QuantizeError, match="cannot be met"):
        quantize_package(pkg, "int8", QuantizeOptions(show_progress=False, max_drift=1e-12))
    assert set(read_manifest(pkg).variants) == {"fp32"}


@pytest.mark.parametrize(
    ("variants", "options", "match"),
    [
        ("int9", QUIET, "unknown variant 'int9'"),
        ("fp32", QUIET, "fp32 is the exported graph"),
        ("int8,int8", QUIET, "listed twice"),
        ("int8", QuantizeOptions(show_progress=False, max_drift=1.5), "--max-drift must lie in"),
        ("fp16", QuantizeOptions(show_progress=False, max_drift=0.1), "applies to the int8 variant"),
        ("int8", QuantizeOptions(show_progress=False, corpus="/nonexistent.txt"), "does not exist"),
    ],
)
def test_bad_quantize_requests(tiny_models, tmp_path, variants, options, match):
    pkg = tmp_path / "pkg"
    shutil.copytree(tiny_models["tiny-bert"].package, pkg)
    with pytest.raises(InputError, match=match):
        quantize_package(pkg, variants, options)


def test_already_quantized_variant_needs_overwrite(quantized):
    with pytest.raises(InputError, match="already has a int8 variant.*--overwrite"):
        quantize_package(quantized["tiny-bert"], "int8", QUIET)


def test_failed_or_interrupted_quantize_leaves_the_package_untouched(tiny_models, tmp_path, monkeypatch):
    from polyglot_onnx.quantize import package as qp

    pkg = tmp_path / "pkg"
    shutil.copytree(tiny_models["tiny-bert"].package, pkg)
    quantize_package(pkg, "int8", QuantizeOptions(show_progress=False, drift=False))
    before = {p.name: p.read_bytes() for p in pkg.iterdir()}
    for error in (QuantizeError("smoke run failed"), KeyboardInterrupt()):

        def boom(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(qp, "smoke_run", boom)
        with pytest.raises(type(error)):
            quantize_package(pkg, "int8,fp16", QuantizeOptions(show_progress=False, overwrite=True))
        assert {p.name: p.read_bytes() for p in pkg.iterdir()} == before
    Embedder.load(pkg, provider="cpu", variant="int8")  # still verifies


def test_export_cli_builds_variants(tiny_models, tmp_path):
    from polyglot_onnx.cli import main

    out = tmp_path / "pkg"
    ckpt = str(tiny_models["tiny-encoder"].checkpoint)
    assert main(["export", ckpt, "--out", str(out), "--variants", "fp32,int8", "--quiet"]) == 0
    manifest = read_manifest(out)
    assert set(manifest.variants) == {"fp32", "int8"} and manifest.variants["int8"].validation["drift"]["passed"]


def test_unquantizable_embedding_width_message():
    from polyglot_onnx.quantize.embedding import pick_block

    assert pick_block(768, 64) == 64 and pick_block(384, 128) == 128 and pick_block(48, 64) == 16
    with pytest.raises(QuantizeError, match="--embedding-block 0"):
        pick_block(36, 64)


def test_int8_options_per_tensor_and_fp32_table(tiny_models, tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(tiny_models["tiny-bert"].package, pkg)
    options = QuantizeOptions(show_progress=False, int8=Int8Options(per_channel=False, embedding_block=0))
    manifest = quantize_package(pkg, "int8", options)
    model = _model(pkg, "int8")
    assert "com.microsoft.GatherBlockQuantized" not in op_histogram(model)
    table = [i for i in model.graph.initializer if sorted(i.dims) == sorted([1200, 64])]
    assert len(table) == 1 and table[0].data_type == TensorProto.FLOAT  # still stored once
    assert manifest.variants["int8"].extra["embedding"] == {"quantized": False}
    assert json.loads((pkg / "manifest.json").read_text())["variants"]["int8"]["validation"]["drift"]["passed"]
    weights = [numpy_helper.to_array(i) for i in model.graph.initializer if i.name.endswith(".rowq_ws")]
    assert weights and all(w.size == 1 for w in weights)  # per tensor: one scale per weight


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["tiny-bert", "tiny-modernbert"])
def test_fp16_on_cuda_is_auto_and_matches_cpu_fp32(quantized, name):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("CUDAExecutionProvider not available (install onnxruntime-gpu on a CUDA machine)")
    pkg = quantized[name]
    texts = sample_lines(16)
    gpu = Embedder.load(pkg, provider="cuda")
    assert (gpu.provider, gpu.variant) == ("CUDAExecutionProvider", "fp16")
    cpu = Embedder.load(pkg, provider="cpu", variant="fp32").encode(texts)
    assert (gpu.encode(texts) * cpu).sum(-1).min() > 0.999
    fm = FillMask.load(pkg, provider="cuda")
    mask = read_manifest(pkg).tokenizer.mask_token
    assert len(fm(f"hola {mask} mundo", top_k=3)) == 3
