"""Windowed long documents at run time (long_text="window"): checked against an independent PyTorch
windowing; the merge takes each token from its most central window."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import sample_lines
from polyglot_onnx import Embedder, FillMask
from polyglot_onnx.errors import InputError, TruncationWarning

# ---------------------------------------------------------------- windowed long documents (runtime)


LONG = " ".join(sample_lines())  # ~1,000 tokens: over tiny-bert's 256 and tiny-modernbert's 512


def _torch_windowed(checkpoint: Path, text: str, max_length: int, stride: int) -> tuple[list[int], np.ndarray]:
    """Independent reference: transformers tokenizer and forward per window, merged with plain loops."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModel.from_pretrained(checkpoint, attn_implementation="sdpa").eval()
    ids = tok(text, truncation=False)["input_ids"]
    first, content, last = ids[0], ids[1:-1], ids[-1]  # both tiny tokenizers frame a text with one token each side
    room = max_length - 2
    starts = []
    s = 0
    while s + room < len(content):
        starts.append(s)
        s += stride
    starts.append(len(content) - room)
    outs = []
    for s in starts:
        window = torch.tensor([[first] + content[s : s + room] + [last]])
        with torch.no_grad():
            outs.append(model(input_ids=window, attention_mask=torch.ones_like(window)).last_hidden_state[0].numpy())
    merged = [outs[0][0]]
    for t in range(len(content)):
        best, best_distance = 0, None
        for k, s in enumerate(starts):
            if s <= t < s + room:
                distance = abs(t - (s + (room - 1) / 2))
                if best_distance is None or distance < best_distance:
                    best, best_distance = k, distance
        merged.append(outs[best][1 + t - starts[best]])
    merged.append(outs[-1][-1])
    return ids, np.stack(merged)


@pytest.mark.parametrize("n, room, stride", [(10, 4, 2), (11, 4, 3), (100, 30, 7), (31, 30, 30), (1000, 510, 255)])
def test_merge_takes_each_token_from_its_most_central_window(n, room, stride):
    from polyglot_onnx.runtime.long_text import Document, Windows, window_starts

    ids = list(range(n + 2))
    windows = Windows(Document(ids, [""] * (n + 2), [(0, 0)] * (n + 2), [None] * (n + 2), 1, 1), room,
                      window_starts(n, room, stride))
    assert windows.starts[0] == 0 and windows.starts[-1] + room == n
    assert [r[1:-1] for r in windows.rows()] == [ids[1 + s : 1 + s + room] for s in windows.starts]
    vectors = [np.random.default_rng(k).standard_normal((room + 2, 3)) for k in range(len(windows.starts))]
    expected = [vectors[0][0]]
    for t in range(n):
        covering = [(abs(t - (s + (room - 1) / 2)), k) for k, s in enumerate(windows.starts) if s <= t < s + room]
        k = min(covering)[1]  # nearest centre, first window on a tie
        expected.append(vectors[k][1 + t - windows.starts[k]])
    expected.append(vectors[-1][-1])
    np.testing.assert_array_equal(windows.merge(vectors), np.stack(expected))


@pytest.mark.parametrize("stride", [None, 100])
def test_window_matches_an_independent_pytorch_windowing(mlm, stride):
    emb = Embedder.load(mlm.package, provider="cpu")
    max_length = emb.engine.text.max_length
    room = max_length - 2
    ids, ref = _torch_windowed(mlm.checkpoint, LONG, max_length, stride or room // 2)
    assert len(ids) > max_length + room // 2  # three windows at least
    short = sample_lines(1)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncationWarning)  # nothing is truncated
        tokens = emb.encode([short, LONG], output="token", normalize=False, long_text="window", window_stride=stride)
        vectors = emb.encode([LONG, short], normalize=False, pooling="mean", long_text="window", window_stride=stride)
    assert tokens[1].embeddings.shape == ref.shape and len(tokens[1].tokens) == len(ids)
    np.testing.assert_allclose(tokens[1].embeddings, ref, atol=1e-4, rtol=1e-3)
    np.testing.assert_allclose(vectors[0], ref.mean(axis=0), atol=1e-4, rtol=1e-3)
    # the short text rode in the same call and is what 'truncate' gives it
    np.testing.assert_allclose(vectors[1], emb.encode([short], normalize=False, pooling="mean")[0], atol=1e-6)
    cls = emb.encode([LONG], normalize=False, pooling="cls", long_text="window", window_stride=stride)[0]
    np.testing.assert_allclose(cls, ref[0], atol=1e-4, rtol=1e-3)


def test_window_words_cover_the_whole_document(tiny_models):
    from tokenizers import Tokenizer

    emb = Embedder.load(tiny_models["tiny-bert"].package, provider="cpu")
    whole = Tokenizer.from_file(str(tiny_models["tiny-bert"].package / "tokenizer.json"))
    whole.no_truncation()
    encoding = whole.encode(LONG)
    words = emb.encode(LONG, output="word", long_text="window")[0]
    assert len(words.words) == len({w for w in encoding.word_ids if w is not None})
    assert words.offsets[-1][1] == len(LONG.rstrip())
    tokens = emb.encode(LONG, output="token", long_text="window")[0]
    assert tokens.tokens == encoding.tokens and tokens.offsets == [tuple(o) for o in encoding.offsets]
    assert np.allclose(np.linalg.norm(tokens.embeddings, axis=1), 1.0, atol=1e-5)


def test_truncate_stays_as_today(mlm, torch_reference):
    emb = Embedder.load(mlm.package, provider="cpu")
    short = sample_lines(1)[0]
    with pytest.warns(TruncationWarning):
        default = emb.encode([LONG, short], normalize=False)
    with pytest.warns(TruncationWarning):
        explicit = emb.encode([LONG, short], normalize=False, long_text="truncate")
    np.testing.assert_array_equal(default, explicit)
    ref = torch_reference(mlm.name, LONG).mean(axis=0)  # PyTorch on the truncated text
    np.testing.assert_allclose(default[0], ref, atol=1e-4, rtol=1e-3)
    windowed = emb.encode([LONG, short], normalize=False, long_text="window")
    assert not np.allclose(windowed[0], default[0], atol=1e-3)  # the rest of the text counts now
    np.testing.assert_allclose(windowed[1], default[1], atol=1e-6)


def test_bad_long_text_arguments(tiny_models):
    emb = Embedder.load(tiny_models["tiny-bert"].package, provider="cpu")
    with pytest.raises(InputError, match="unknown long_text 'all'"):
        emb.encode("x", long_text="all")
    for stride in (0, 255, 1.5):
        with pytest.raises(InputError, match="window_stride must be an integer from 1 to 254"):
            emb.encode(LONG, long_text="window", window_stride=stride)


def test_fill_mask_on_a_long_text_centres_a_window_on_each_mask(tiny_models, caplog):
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tiny = tiny_models["tiny-bert"]
    fm = FillMask.load(tiny.package, provider="cpu")
    words = LONG.split()
    text = " ".join(words[:3] + ["[MASK]"] + words[3:300] + ["[MASK]"] + words[300:])
    with caplog.at_level(logging.INFO, logger="polyglot_onnx"):
        ours = fm(text, top_k=3)
    assert "each of its 2 mask(s) is predicted in a 256-token window centred on it" in caplog.text
    tok = AutoTokenizer.from_pretrained(tiny.checkpoint)
    model = AutoModelForMaskedLM.from_pretrained(tiny.checkpoint, attn_implementation="sdpa").eval()
    ids = tok(text, truncation=False)["input_ids"]
    content, room = ids[1:-1], 254
    masks = [t for t, i in enumerate(content) if i == tok.mask_token_id]
    assert len(masks) == 2 and masks[1] > room and len(ours) == 2
    for t, preds in zip(masks, ours):
        start = min(max(t - room // 2, 0), len(content) - room)
        window = torch.tensor([[ids[0]] + content[start : start + room] + [ids[-1]]])
        with torch.no_grad():
            logits = model(input_ids=window).logits[0, 1 + t - start]
        probs = torch.softmax(logits.double(), -1)
        top = torch.topk(probs, 3)
        assert [p["token"] for p in preds] == top.indices.tolist()
        np.testing.assert_allclose([p["score"] for p in preds], top.values.numpy(), rtol=1e-3)


def test_cli_embed_long_text_window(tiny_models):
    pkg = str(tiny_models["tiny-bert"].package)
    res = subprocess.run(
        [sys.executable, "-m", "polyglot_onnx", "embed", pkg, "--json", "--long-text", "window",
         "--window-stride", "200", "--output", "token", LONG],
        capture_output=True, text=True,
    )
    assert res.returncode == 0, res.stderr
    assert "warning" not in res.stderr
    tokens = json.loads(res.stdout)["embeddings"][0]["tokens"]
    assert len(tokens) > 2 * 256
