"""Export stage: fused ops per layer, tied weights once, manifest facts, self-validation, atomicity."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import attention_nodes
from polyglot_onnx import manifest as mf
from polyglot_onnx.errors import ExportError, FusionError, ModelNotFoundError, ValidationError
from polyglot_onnx.export import ExportOptions, Tolerance, export_package
from polyglot_onnx.export.families import STRATEGIES
from polyglot_onnx.export.passes import DeduplicateInitializers, FusionCheck, count_large_matrices
from polyglot_onnx.graph_toolkit import op_histogram


def test_every_layer_has_fused_attention(mlm):
    manifest = mf.read_manifest(mlm.package)
    model = onnx.load(str(mlm.package / manifest.variants["fp32"].graph_file))
    counts = op_histogram(model)
    layers = manifest.model.num_layers
    expected = STRATEGIES[manifest.model.architecture].expected_ops(layers)
    expected["Attention"] = attention_nodes(mlm)  # banded ModernBERT: global layers query-chunked
    assert counts["Attention"] == attention_nodes(mlm) >= layers > 0
    assert {op: counts[op] for op in expected} == expected
    if manifest.model.architecture == "modernbert":
        assert counts["RotaryEmbedding"] == 2 * layers
    # no decomposed attention left behind: the one Softmax is the fill-mask top k's (export/topk.py)
    assert counts.get("Softmax", 0) == 1 and counts["TopK"] == 1
    assert manifest.variants["fp32"].op_counts["Attention"] == attention_nodes(mlm)


def test_tied_embedding_and_decoder_stored_once(mlm):
    manifest = mf.read_manifest(mlm.package)
    model = onnx.load(str(mlm.package / "model.onnx"))
    shape = (manifest.model.vocab_size, manifest.model.hidden_size)
    assert count_large_matrices(model, shape) == 1


def test_manifest_records_files_versions_and_validation(mlm):
    manifest = mf.read_manifest(mlm.package)
    variant = manifest.variants["fp32"]
    for entry in variant.files:
        assert mf.sha256_file(mlm.package / entry.path) == entry.sha256
        assert (mlm.package / entry.path).stat().st_size == entry.size
    assert {"torch", "transformers", "onnx", "onnxruntime"} <= set(manifest.versions)
    assert manifest.inputs == ["input_ids", "attention_mask", "mask_positions", "mask_top_k"]
    assert manifest.outputs == ["token_embeddings", "sentence_embedding", "cls_embedding", "mask_logits",
                                "mask_top_scores", "mask_top_ids"]
    val = variant.validation
    assert val["passed"] and val["reference"] == "pytorch"
    assert set(val["max_abs_diff"]) == set(manifest.outputs)
    assert max(val["max_abs_diff"].values()) < 1e-4
    # validated beyond the local window (16 for tiny-modernbert) and on a padded batch
    assert any(shape[1] > 128 for shape in val["cases"])
    assert any(shape[0] > 1 for shape in val["cases"])
    assert manifest.tokenizer.mask_token == mlm.mask_token
    assert manifest.tokenizer.special_ids["mask"] == manifest.tokenizer.mask_token_id
    if manifest.model.architecture == "modernbert":
        assert manifest.model.local_window == 16


def test_embedding_only_checkpoint(tiny_models):
    manifest = mf.read_manifest(tiny_models["tiny-encoder"].package)
    assert not manifest.model.has_mlm_head
    assert mf.MASK_LOGITS not in manifest.outputs and mf.MASK_POSITIONS not in manifest.inputs
    # sentence-transformers metadata is honoured: CLS pooling, max_seq_length 128
    assert manifest.model.default_pooling == "cls"
    assert manifest.model.max_length == 128


def test_embedding_call_does_not_run_the_lm_head(tiny_models, tmp_path):
    """onnxruntime runs every node; an empty mask_positions must make the head a zero-row product."""
    import onnxruntime as ort

    pkg = tiny_models["tiny-modernbert"].package
    manifest = mf.read_manifest(pkg)
    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp_path / "prof")
    sess = ort.InferenceSession(str(pkg / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    ids = np.full((2, 40), 7, dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "mask_positions": np.zeros(0, np.int64),
             "mask_top_k": np.array([5], np.int64)}
    sess.run(["sentence_embedding"], feeds)
    events = json.loads(Path(sess.end_profiling()).read_text())
    vocab = manifest.model.vocab_size
    shapes = [
        dims
        for e in events
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
        for out in e["args"].get("output_type_shape", [])
        for dims in out.values()
        if dims and dims[-1] == vocab
    ]
    assert shapes, "the LM head's vocab-wide output was not found in the profile"
    assert all(dims[0] == 0 for dims in shapes), shapes


def test_fusion_check_fails_loudly_when_attention_is_missing(tiny_models):
    model = onnx.load(str(tiny_models["tiny-bert"].package / "model.onnx"))
    with pytest.raises(FusionError, match="Attention: 2 found, 3 expected"):
        FusionCheck({"Attention": 3}).apply(model)


def test_dedup_merges_identical_weights():
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((64, 300)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["a", "ids"], ["x"]), helper.make_node("Gather", ["b", "ids"], ["y"])],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("x", "y")],
        [numpy_helper.from_array(w, "a"), numpy_helper.from_array(w.copy(), "b")],
    )
    model = helper.make_model(graph)
    report = DeduplicateInitializers().apply(model)
    assert report.counts == {"merged": 1, "bytes_saved": w.nbytes}
    assert [i.name for i in model.graph.initializer] == ["a"]
    assert [n.input[0] for n in model.graph.node] == ["a", "a"]


def test_validation_above_tolerance_fails_and_writes_nothing(tiny_models, tmp_path):
    out = tmp_path / "pkg"
    options = ExportOptions(tolerance=Tolerance(atol=0.0, rtol=0.0), show_progress=False)
    with pytest.raises(ValidationError, match="max abs diff"):
        export_package(str(tiny_models["tiny-bert"].checkpoint), out, options)
    assert not out.exists()
    assert os.listdir(tmp_path) == []  # no temporary directory left behind


def test_validation_catches_a_graph_that_disagrees_with_torch(tiny_models, tmp_path):
    """A perturbed PyTorch weight against the exported graph must trip the check."""
    import torch

    from polyglot_onnx.export.graph import build_module
    from polyglot_onnx.export.loading import load_checkpoint
    from polyglot_onnx.export.validate import validate

    tiny = tiny_models["tiny-modernbert"]
    ckpt = load_checkpoint(str(tiny.checkpoint))
    module = build_module(ckpt)
    weight = ckpt.model.model.layers[1].attn.Wo.weight
    with torch.no_grad():  # random, not uniform: LayerNorm would cancel a constant shift
        weight.add_(0.05 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValidationError):
        validate(ckpt, module, str(tiny.package / "model.onnx"), Tolerance())


def test_export_refuses_a_non_empty_target(tiny_models, tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(ExportError, match="not empty"):
        export_package(str(tiny_models["tiny-bert"].checkpoint), tmp_path, ExportOptions(show_progress=False))
    assert (tmp_path / "keep.txt").read_text() == "x"


def test_overwrite_replaces_atomically(tiny_models, tmp_path):
    out = tmp_path / "pkg"
    shutil.copytree(tiny_models["tiny-bert"].package, out)
    export_package(str(tiny_models["tiny-modernbert"].checkpoint), out, ExportOptions(overwrite=True, show_progress=False))
    assert mf.read_manifest(out).model.architecture == "modernbert"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


@pytest.mark.parametrize(
    "source, message",
    [
        ("no-such-model", "neither a checkpoint directory, a catalog name"),
        ("./missing/dir", "neither a checkpoint directory"),
    ],
)
def test_unknown_sources_are_clear_errors(source, message, tmp_path):
    with pytest.raises(ModelNotFoundError, match=message):
        export_package(source, tmp_path / "out", ExportOptions(show_progress=False))


def test_directory_without_config(tmp_path):
    (tmp_path / "ckpt").mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        export_package(str(tmp_path / "ckpt"), tmp_path / "out", ExportOptions(show_progress=False))


def test_unsupported_architecture(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path / "gpt")
    with pytest.raises(ExportError, match="not supported.*bert, modernbert"):
        export_package(str(tmp_path / "gpt"), tmp_path / "out", ExportOptions(show_progress=False))


def test_large_graphs_use_external_data(tiny_models, tmp_path, monkeypatch):
    """Above the protobuf limit the weights go to model.onnx.data; the runtime checks and loads both."""
    from polyglot_onnx import Embedder
    from polyglot_onnx.export import pipeline

    monkeypatch.setattr(pipeline, "EXTERNAL_DATA_THRESHOLD", 0)
    out = tmp_path / "pkg"
    manifest = export_package(str(tiny_models["tiny-modernbert"].checkpoint), out, ExportOptions(show_progress=False))
    files = [f.path for f in manifest.variants["fp32"].files]
    assert files == ["model.onnx", "model.onnx.data"]
    import onnx

    graph = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
    external = [i for i in graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL]
    inline = [i.name for i in graph.initializer if i.data_location != onnx.TensorProto.EXTERNAL and len(i.raw_data) > 1024]
    assert external and not inline, inline  # every weight is in the data file, none left in the graph
    stored = sum(int(dict((e.key, e.value) for e in i.external_data)["length"]) for i in external)
    assert (out / "model.onnx.data").stat().st_size >= stored > 500_000
    reference = Embedder.load(tiny_models["tiny-modernbert"].package).encode(["hello world"])
    np.testing.assert_allclose(Embedder.load(out).encode(["hello world"]), reference, atol=1e-6)
