"""Real trained weights (random fixtures hide activation outliers) and full-size architectures."""

from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import minilm_dir
from polyglot_onnx import Embedder
from polyglot_onnx.export import ExportOptions, export_package
from polyglot_onnx.export.chunked import GLOBAL_QUERY_CHUNKS
from polyglot_onnx.manifest import read_manifest


def test_trained_minilm_matches_pytorch_and_ranks_paraphrases_first(minilm):
    import torch
    from transformers import AutoModel, AutoTokenizer

    source = minilm_dir()
    manifest = read_manifest(minilm)
    assert not manifest.model.has_mlm_head and manifest.variants["fp32"].op_counts["Attention"] == 6
    assert manifest.model.default_pooling == "mean" and manifest.model.max_length == 256  # from ST config

    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market crashed today.",
             "Un homme mange de la nourriture.", "Der Aktienmarkt ist heute eingebrochen."]
    ours = Embedder.load(minilm, variant="fp32").encode(texts, batch_size=2)
    tok, model = AutoTokenizer.from_pretrained(source), AutoModel.from_pretrained(source).eval()
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    weights = enc["attention_mask"].unsqueeze(-1).float()
    ref = ((hidden * weights).sum(1) / weights.sum(1)).numpy()
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert (ours * ref).sum(1).min() >= 0.9999
    sims = ours @ ours.T
    assert sims[0, 1] > 0.6 and sims[0, 1] > sims[0, 2] + 0.4  # a paraphrase outranks an unrelated text


def test_trained_minilm_int8_fp16_and_mixed_precision_drift(minilm, tmp_path):
    """Real activation outliers: plain dynamic int8 drifts measurably, fp16 does not, and
    drift-guided mixed precision brings int8 inside the default gate (figures in README)."""
    import json
    import shutil

    from polyglot_onnx.quantize import QuantizeOptions, quantize_package
    from polyglot_onnx.quantize.corpus import load_corpus

    corpus = tmp_path / "corpus.jsonl"
    subset = load_corpus().subset(3).samples  # 3 texts x 24 languages keeps CI quick
    corpus.write_text("".join(json.dumps(s.__dict__, ensure_ascii=False) + "\n" for s in subset), encoding="utf-8")
    pkg = tmp_path / "pkg"
    shutil.copytree(minilm, pkg)
    manifest = quantize_package(pkg, "int8,fp16", QuantizeOptions(show_progress=False, corpus=str(corpus)))
    fp16 = manifest.variants["fp16"].validation["drift"]
    assert fp16["passed"] and fp16["overall"]["sentence_cosine_min"] > 0.9999
    plain = manifest.variants["int8"].validation["drift"]["overall"]
    assert 0.95 < plain["sentence_cosine_mean"] < 0.999  # real, measurable int8 noise
    assert manifest.variants["int8"].extra["size_ratio_to_fp32"] < 0.3

    options = QuantizeOptions(show_progress=False, corpus=str(corpus), overwrite=True, max_drift=0.08)
    mixed = quantize_package(pkg, "int8", options).variants["int8"]
    report = mixed.extra["mixed_precision"]
    assert report["drift_plain_int8"] > 0.08 >= report["drift_mixed"] and report["fp32_nodes"]
    assert mixed.validation["drift"]["passed"]
    assert mixed.validation["drift"]["overall"]["sentence_cosine_p5"] > plain["sentence_cosine_p5"]


@pytest.mark.slow
# mmBERT-small: 14 local layers (banded + dense route each) and 8 global ones (8 query chunks + dense route each)
@pytest.mark.parametrize("name, attention", [("mmbert-small", 2 * 14 + (GLOBAL_QUERY_CHUNKS + 1) * 8),
                                             ("mbert-cased", 12)])
def test_full_size_architecture_exports_fused_and_valid(name, attention, tmp_path):
    if not os.environ.get("POLYGLOT_SLOW"):
        pytest.skip("full-size export takes 35-80 s and ~3 GB: set POLYGLOT_SLOW=1 to run it")
    manifest = export_package(name, tmp_path / name, ExportOptions(show_progress=False, random_weights=True))
    assert manifest.variants["fp32"].op_counts["Attention"] == attention
    assert manifest.variants["fp32"].validation["passed"]
    assert read_manifest(tmp_path / name).model.vocab_size == {"mmbert-small": 256000, "mbert-cased": 119547}[name]


def test_trained_minilm_equals_sentence_transformers_encode(minilm):
    """Real weights through modules.json (mean pooling + Normalize): the vectors SentenceTransformer gives,
    with and without normalize (its Normalize module applies either way), and Matryoshka-truncated."""
    st = pytest.importorskip("sentence_transformers", reason="in the test extra").SentenceTransformer
    model = st(str(minilm_dir()), device="cpu")
    texts = ["A man is eating food.", "Un homme mange de la nourriture.", "Der Aktienmarkt ist heute eingebrochen."]
    emb = Embedder.load(minilm, variant="fp32", provider="cpu")
    assert read_manifest(minilm).model.sentence_pipeline == ["Pooling(mean)", "Normalize"]
    for normalize in (False, True):
        np.testing.assert_allclose(emb.encode(texts, normalize=normalize), model.encode(texts), atol=2e-6)
    np.testing.assert_allclose(emb.encode(texts, dimensions=64), model.encode(texts, truncate_dim=64,
                               normalize_embeddings=True), atol=2e-6)
