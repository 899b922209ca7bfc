"""Long inputs: banded local attention in ModernBERT exports (windowed documents: test_long_documents.py).

Banded graphs are checked against the dense graph and against transformers' own forward at the
window's edges and far beyond; windowed documents against an independent PyTorch windowing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from polyglot_onnx import manifest as mf
from polyglot_onnx.errors import FusionError
from polyglot_onnx.export.chunked import GLOBAL_QUERY_CHUNKS
from polyglot_onnx.export.passes import FusionCheck, op_counts_by_layer_kind
from polyglot_onnx.export.validate import Tolerance

WINDOW = 16  # tiny-modernbert's local_attention; transformers masks |i - j| > WINDOW // 2


# ---------------------------------------------------------------- banded attention (export)


@pytest.fixture(scope="module")
def modernbert_graphs(tiny_models, tmp_path_factory) -> dict[str, Any]:
    """The package's (banded) session, a dense export of the same checkpoint, and the PyTorch module."""
    import onnxruntime as ort

    from polyglot_onnx.export.graph import build_module, export_onnx
    from polyglot_onnx.export.loading import load_checkpoint

    tiny = tiny_models["tiny-modernbert"]
    ckpt = load_checkpoint(str(tiny.checkpoint))
    module = build_module(ckpt)
    dense_path = tmp_path_factory.mktemp("dense") / "dense.onnx"
    onnx.save(export_onnx(ckpt, module, banded=False), str(dense_path))
    cpu = ["CPUExecutionProvider"]
    return {
        "banded": ort.InferenceSession(str(tiny.package / "model.onnx"), providers=cpu),
        "dense": ort.InferenceSession(str(dense_path), providers=cpu),
        "dense_model": onnx.load(str(dense_path)),
        "module": module,
        "ckpt": ckpt,
    }


def _batch(lengths: list[int], seed: int = 0) -> dict[str, np.ndarray]:
    """Right-padded random ids (above the special ids) with a mask position in every row."""
    rng = np.random.default_rng(seed)
    width = max(lengths)
    ids = np.zeros((len(lengths), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for b, n in enumerate(lengths):
        ids[b, :n] = rng.integers(5, 1500, n)
        mask[b, :n] = 1
    positions = np.asarray([b * width + n // 2 for b, n in enumerate(lengths)], dtype=np.int64)
    return {mf.INPUT_IDS: ids, mf.ATTENTION_MASK: mask, mf.MASK_POSITIONS: positions,
            mf.MASK_TOP_K: np.array([5], np.int64)}


def _assert_close(got: list[np.ndarray], ref: list[np.ndarray], mask: np.ndarray, what: str) -> None:
    tol = Tolerance()
    valid = mask.astype(bool)
    for k, (a, b) in enumerate(zip(got, ref)):
        if k == 0:  # token embeddings: padded positions carry no meaning
            a, b = a[valid], b[valid]
        assert np.isfinite(a).all(), what
        np.testing.assert_allclose(a, b, atol=tol.atol, rtol=tol.rtol, err_msg=f"{what}, output {k}")


def _run(session: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """A session over the inputs its graph declares (the dense comparison graph has no in-graph top k)."""
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in feeds.items() if k in names})


def _torch(module: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        return [t.numpy() for t in module(*(torch.from_numpy(feeds[n]) for n in feeds if n != mf.MASK_TOP_K))]


EDGE_LENGTHS = [1, WINDOW - 1, WINDOW, WINDOW + 1, 3 * WINDOW + 7, 1000]


def test_modernbert_exports_banded_by_default_with_per_kind_counts(tiny_models):
    manifest = mf.read_manifest(tiny_models["tiny-modernbert"].package)
    assert manifest.model.local_attention == "banded" and manifest.model.dense_up_to == 2 * WINDOW
    counts = manifest.variants["fp32"].op_counts
    # tiny-modernbert: layer 0 global (query-chunked: one Attention per chunk), layers 1 and 2 local; each
    # layer also has its dense route (one Attention) for sequences up to two windows (export/dispatch.py)
    from polyglot_onnx.export.chunked import GLOBAL_QUERY_CHUNKS

    assert manifest.model.num_layers == 3
    assert (counts["Attention.local"], counts["Attention.global"]) == (2 + 2, GLOBAL_QUERY_CHUNKS + 1)
    assert counts["Attention"] == 2 + 2 + GLOBAL_QUERY_CHUNKS + 1
    assert (counts["RotaryEmbedding.local"], counts["RotaryEmbedding.global"]) == (4, 2)
    assert mf.read_manifest(tiny_models["tiny-bert"].package).model.local_attention is None


def test_banded_equals_dense_and_pytorch_at_the_window_edges(modernbert_graphs):
    """Each length alone and all in one padded batch; 1,000 is past the tiny model's 512 maximum on purpose."""
    g = modernbert_graphs
    for lengths in [[n] for n in EDGE_LENGTHS] + [EDGE_LENGTHS, [WINDOW // 2 + 1, WINDOW // 2, 3]]:
        feeds = _batch(lengths)
        ref = _torch(g["module"], feeds)
        banded = g["banded"].run(None, feeds)
        _assert_close(banded, ref, feeds[mf.ATTENTION_MASK], f"banded vs torch at {lengths}")
        _assert_close(banded, _run(g["dense"], feeds), feeds[mf.ATTENTION_MASK], f"banded vs dense at {lengths}")


def test_local_layers_attend_over_three_blocks_only(tiny_models, tmp_path):
    """The profile shows the band: local Attention reads [batch x blocks, heads, 8, d] x 24 keys, not 200;
    the global layer reads all 200 keys for 25 queries at a time."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp_path / "prof")
    sess = ort.InferenceSession(
        str(tiny_models["tiny-modernbert"].package / "model.onnx"), opts, providers=["CPUExecutionProvider"]
    )
    sess.run(None, _batch([200, 150]))
    events = json.loads(Path(sess.end_profiling()).read_text())
    keys = [
        list(e["args"]["input_type_shape"][1].values())[0]
        for e in events
        if e.get("cat") == "Node" and e["args"].get("op_name") == "Attention"
    ]
    half = WINDOW // 2
    chunk = 200 // GLOBAL_QUERY_CHUNKS
    local = [k for k in keys if k[0] != 2]
    assert [k[2] for k in local] == [3 * half, 3 * half], keys
    assert [k[0] for k in local] == [2 * 200 // half] * 2  # local: batch 2 x 25 blocks
    # the global layer: every key, a chunk of the queries at a time
    queries = [list(e["args"]["input_type_shape"][0].values())[0] for e in events
               if e.get("cat") == "Node" and e["args"].get("op_name") == "Attention"]
    assert sorted(q[2] for q in queries if q[0] == 2) == [chunk] * GLOBAL_QUERY_CHUNKS
    assert sorted(k[2] for k in keys if k[0] == 2) == [200] * GLOBAL_QUERY_CHUNKS


def test_short_inputs_take_the_dense_route(tiny_models, tmp_path):
    """Up to two windows (32 tokens here) each layer's If runs one Attention over every key, as a dense graph:
    3 calls for 3 layers, [batch, heads, L, d] x L keys; one token more and the banded route runs."""
    import onnxruntime as ort

    def attention_inputs(lengths: list[int]) -> list[list[int]]:
        opts = ort.SessionOptions()
        opts.enable_profiling = True
        opts.profile_file_prefix = str(tmp_path / f"prof{max(lengths)}")
        path = str(tiny_models["tiny-modernbert"].package / "model.onnx")
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        sess.run(None, _batch(lengths))
        events = json.loads(Path(sess.end_profiling()).read_text())
        return [list(e["args"]["input_type_shape"][1].values())[0] for e in events
                if e.get("cat") == "Node" and e["args"].get("op_name") == "Attention"]

    assert [k[0] for k in attention_inputs([2 * WINDOW, 5])] == [2, 2, 2]
    assert [k[2] for k in attention_inputs([2 * WINDOW, 5])] == [2 * WINDOW] * 3
    assert len(attention_inputs([2 * WINDOW + 1, 5])) == 2 + GLOBAL_QUERY_CHUNKS


def test_query_chunked_attention_equals_plain_attention() -> None:
    """Global layers' chunking is exact, for lengths that do and do not divide into the chunks."""
    import torch
    import torch.nn.functional as F

    from polyglot_onnx.export.chunked import chunked_sdpa

    gen = torch.Generator().manual_seed(0)
    for length in (1, 7, 8, 33, 200):
        q, k, v = (torch.randn(2, 3, length, 4, generator=gen) for _ in range(3))
        valid = torch.ones(2, length, dtype=torch.long)
        valid[1, max(1, length - 5):] = 0
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=valid.bool()[:, None, None, :], scale=0.5)
        got = chunked_sdpa(q, k, v, valid, GLOBAL_QUERY_CHUNKS, 0.5)
        torch.testing.assert_close(got, want.transpose(1, 2), atol=1e-6, rtol=1e-5)


def test_dense_export_is_kept_for_comparison(modernbert_graphs):
    counts = op_counts_by_layer_kind(modernbert_graphs["dense_model"], {"Attention"}, ["global", "local", "local"])
    assert counts == {"Attention.global": 1, "Attention.local": 2}


def test_fusion_check_counts_each_kind_of_layer(modernbert_graphs):
    model = modernbert_graphs["dense_model"]
    kinds = ["global", "local", "local"]
    FusionCheck({"Attention": 3, "Attention.local": 2, "Attention.global": 1}, kinds).apply(model)
    with pytest.raises(FusionError, match="Attention.local: 1 found, 2 expected"):
        FusionCheck({"Attention.local": 2}, ["global", "local", "global"]).apply(model)


def test_banded_export_validates_beyond_two_windows(tiny_models):
    cases = mf.read_manifest(tiny_models["tiny-modernbert"].package).variants["fp32"].validation["cases"]
    assert [6, 3 * WINDOW + 7] in cases  # the window-edge batch: 55, 17, 16, 15, 9, 3 tokens
    assert [1, 2 * WINDOW] in cases and [1, 2 * WINDOW + 1] in cases  # both sides of the length dispatch


def test_int8_and_fp16_of_the_banded_graph_hold_at_long_lengths(quantized):
    """The quantize stage builds both variants from the banded graph; both stay near fp32 at 1,000 tokens
    (the banded route) and at 20 (the dense route of the same graph)."""
    import onnxruntime as ort

    pkg = quantized["tiny-modernbert"]
    manifest = mf.read_manifest(pkg)

    def sentence(variant: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        path = str(pkg / manifest.variants[variant].graph_file)
        return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run([mf.SENTENCE_EMBEDDING], feeds)[0]

    for lengths in ([1000, WINDOW + 1, 1], [20, 5]):
        feeds = _batch(lengths)
        feeds[mf.MASK_POSITIONS] = np.zeros(0, np.int64)
        ref = sentence("fp32", feeds)
        for variant, floor in (("int8", 0.999), ("fp16", 0.99999)):
            out = sentence(variant, feeds)
            cos = (out * ref).sum(-1) / (np.linalg.norm(out, axis=-1) * np.linalg.norm(ref, axis=-1))
            assert np.isfinite(out).all() and cos.min() >= floor, (variant, lengths, cos)
            assert manifest.variants[variant].validation["drift"]["passed"]
            assert manifest.variants[variant].op_counts["Attention"] == 2 + 2 + GLOBAL_QUERY_CHUNKS + 1


@pytest.mark.slow
def test_banded_equals_pytorch_at_4096_and_8192(modernbert_graphs):
    """The tiny model far past its 512 maximum (rotary positions are computed, not looked up)."""
    g = modernbert_graphs
    feeds = _batch([8192, 4096, 1])
    _assert_close(g["banded"].run(None, feeds), _torch(g["module"], feeds), feeds[mf.ATTENTION_MASK], "8192 batch")
    feeds = _batch([4096, WINDOW + 1])
    _assert_close(g["banded"].run(None, feeds), _run(g["dense"], feeds), feeds[mf.ATTENTION_MASK], "4096 dense")
