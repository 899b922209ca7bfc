"""Fill-mask finishes in the graph (export/topk.py): same predictions as the host path, k clamped, exact targets."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import tomllib

from polyglot_onnx import FillMask
from polyglot_onnx import manifest as mf
from polyglot_onnx.errors import ExportError
from polyglot_onnx.runtime.engine import Engine, load_engine


def _flat(result):
    """Predictions of a FillMask result in order, whatever its nesting (texts x masks x k)."""
    if isinstance(result, dict):
        return [result]
    return [p for item in result for p in _flat(item)]


def _texts(mask: str) -> list[str]:
    return [f"Paris est la {mask} de la France.", f"{mask} — столица {mask}.", f"東京は日本の{mask}です。", mask]


@pytest.mark.parametrize("variant", ["fp32", "int8", "fp16"])
def test_graph_top_k_equals_the_host_path(quantized, mlm, variant, monkeypatch):
    engine = load_engine(quantized[mlm.name], "cpu", variant, refuse_unfit=False)  # fp16 runs on CPU for the test
    assert engine.top_k_in_graph
    fm = FillMask(engine)
    asked: list[list[str]] = []
    run = engine.run
    monkeypatch.setattr(engine, "run", lambda outputs, *a, **k: asked.append(outputs) or run(outputs, *a, **k))
    texts = _texts(fm.mask_token)
    ours = fm(texts, top_k=7)
    assert all(mf.MASK_LOGITS not in o for o in asked), "the in-graph path must not copy logits to the host"
    monkeypatch.setattr(Engine, "top_k_in_graph", property(lambda self: False))
    host = fm(texts, top_k=7)
    a, b = _flat(ours), _flat(host)
    assert len(a) == len(b) == 7 * 5
    for p, q in zip(a, b):
        assert (p["token"], p["token_str"], p["sequence"]) == (q["token"], q["token_str"], q["sequence"])
        assert p["score"] == pytest.approx(q["score"], rel=1e-5, abs=1e-9)


def test_targets_are_scored_from_the_logits_exactly(mlm, monkeypatch):
    fm = FillMask.load(mlm.package, provider="cpu")
    asked: list[list[str]] = []
    run = fm.engine.run
    monkeypatch.setattr(fm.engine, "run", lambda outputs, *a, **k: asked.append(outputs) or run(outputs, *a, **k))
    vocab = fm.engine.text.tokenizer.get_vocab()
    targets = [t for t in sorted(vocab) if t.isalpha() and len(t) > 3][:4]
    preds = fm(f"Roma è famosa per il {fm.mask_token}.", targets=targets, top_k=4)
    assert asked == [[mf.MASK_LOGITS]] and len(preds) == 4


def test_k_is_clamped_to_the_vocabulary_and_to_one(mlm):
    engine = load_engine(mlm.package, "cpu", "fp32")
    assert mf.MASK_TOP_K in engine.manifest.inputs
    ids = np.array([[1, 40, 41, 42]], np.int64)
    attn = np.ones_like(ids)
    positions = np.array([1, 2], np.int64)
    vocab = engine.run([mf.MASK_LOGITS], ids, attn, positions)[0].shape[1]
    for k, width in ((10**9, vocab), (0, 1), (-3, 1), (3, 3)):
        scores, tokens = engine.run([mf.MASK_TOP_SCORES, mf.MASK_TOP_IDS], ids, attn, positions, k)
        assert scores.shape == tokens.shape == (2, width) and scores.dtype == np.float32
        assert np.all(np.diff(scores, axis=1) <= 0)
    full, _ = engine.run([mf.MASK_TOP_SCORES, mf.MASK_TOP_IDS], ids, attn, positions, 10**9)
    assert np.allclose(full.sum(axis=1), 1.0, atol=1e-5)  # softmax over the whole vocabulary
    # an embedding call: no mask rows, so the head and its top k are empty
    scores, tokens = engine.run([mf.MASK_TOP_SCORES, mf.MASK_TOP_IDS], ids, attn)
    assert scores.shape[0] == tokens.shape[0] == 0


def test_export_validation_records_the_top_k(mlm):
    manifest = mf.read_manifest(mlm.package)
    diff = manifest.variants["fp32"].validation["max_abs_diff"]
    assert diff[mf.MASK_TOP_IDS] == 0.0 and diff[mf.MASK_TOP_SCORES] < 1e-6


def test_old_torch_or_transformers_is_refused_in_one_line():
    from polyglot_onnx.export.versions import FLOORS, check_versions

    with pytest.raises(ExportError, match=r"^torch 2\.8\.0 is older than 2\.9.*pip install 'torch>=2\.9'$"):
        check_versions({"torch": "2.8.0", "transformers": "5.23.0"})
    with pytest.raises(ExportError, match=r"^transformers 5\.0\.0 is older than 5\.1"):
        check_versions({"torch": "2.11.0+cu130", "transformers": "5.0.0"})
    check_versions({"torch": "2.9.1+cu128", "transformers": "5.1.0"})
    # pyproject's [export] extra states the same floors
    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text(encoding="utf-8"))
    stated = {}
    for requirement in project["project"]["optional-dependencies"]["export"]:
        found = re.match(r"([a-z]+)>=(\d+)\.(\d+)$", requirement)
        if found and found.group(1) in FLOORS:
            stated[found.group(1)] = (int(found.group(2)), int(found.group(3)))
    assert stated == FLOORS


def test_dispatch_finds_the_route_result_through_values_not_shapes():
    """torch 2.11 reads a reshape's size from the attention output: a Shape-derived tensor leaving the route
    must not count as its result (it failed with 'route has 2 outputs')."""
    from onnx import helper

    from polyglot_onnx.export.dispatch import _reaches

    attention = helper.make_node("Attention", ["q", "k", "v"], ["heads"])
    transpose = helper.make_node("Transpose", ["heads"], ["result"])
    shape = helper.make_node("Shape", ["heads"], ["dims"])
    div = helper.make_node("Div", ["dims", "two"], ["width"])
    produced = {o: n for n in (attention, transpose, shape, div) for o in n.output}
    assert _reaches(transpose, produced, "Attention")
    assert not _reaches(div, produced, "Attention")


def test_batched_decoding_is_decoding_row_by_row(bert_fm):
    """FillMask decodes a call's strings in two batched calls: the same strings as one decode per row."""
    text = bert_fm.engine.text
    rows = [e.ids for e in text.encode(["Paris ist die Hauptstadt [MASK] Frankreich.", "¿Dónde está la estación?", "a"])]
    for skip in (True, False):
        one_by_one = [text.tokenizer.decode(r, skip_special_tokens=skip) for r in rows]
        assert text.decode_batch(rows, skip_special_tokens=skip) == one_by_one
    assert text.decode_batch([]) == []
