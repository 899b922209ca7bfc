"""Export validates itself against PyTorch on real text, before anything is written out.

Cases cover a short sequence, sequences longer than ModernBERT's 128-token local window, and a
padded batch of mixed lengths, with mask tokens placed in the text for the masked-LM head. Models
with a local window get one more padded batch at the window's edges and beyond 2 x window, where
banded attention's blocks (half a window each) and their neighbours all come into play, and single
sequences of exactly 2 x window and one token more: the two sides of the length dispatch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from polyglot_onnx import manifest as mf
from polyglot_onnx.errors import ValidationError
from polyglot_onnx.export.topk import DEFAULT_K, reference_top_k
from polyglot_onnx.graph_feeds import graph_feeds

# Real sentences in several scripts; repeated to reach the lengths validation needs.
SAMPLE_TEXT = (
    "The quick brown fox jumps over the lazy dog near the river bank. "
    "Le chat dort sur le canapé pendant que la pluie tombe doucement. "
    "Der Zug nach Berlin fährt heute um neun Uhr vom Hauptbahnhof ab. "
    "Москва является столицей России и крупнейшим городом страны. "
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας και έχει μακρά ιστορία. "
    "القاهرة هي عاصمة مصر وأكبر مدينة في العالم العربي. "
    "हिंदी भारत की सबसे अधिक बोली जाने वाली भाषा है। "
    "東京は日本の首都であり、世界で最も人口の多い都市の一つです。 "
    "서울은 대한민국의 수도이며 가장 큰 도시입니다. "
    "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย "
)


@dataclass(frozen=True)
class Tolerance:
    """Element-wise |onnx - torch| <= atol + rtol * |torch| on every output."""

    atol: float = 1e-4
    rtol: float = 1e-3


def _lengths(max_length: int, window: int | None = None) -> tuple[list[int], list[list[int]]]:
    singles = sorted({min(n, max_length) for n in (12, 160, 300)})
    batches = [[min(n, max_length) for n in (300, 150, 20)]]
    if window:
        edges = (3 * window + 7, window + 1, window, window - 1, window // 2 + 1, 1)
        batches.append([min(n, max_length) for n in edges])
        # both sides of the length dispatch (export/dispatch.py: dense up to two windows, banded beyond)
        singles = sorted(set(singles) | {min(n, max_length) for n in (2 * window, 2 * window + 1)})
    return singles, batches


def build_cases(ckpt: Any) -> list[dict[str, np.ndarray]]:
    """Token id batches cut from real text, padded on the right, masks inserted for the head."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(ckpt.tokenizer_json)
    body = tok.encode(SAMPLE_TEXT, add_special_tokens=False).ids
    prefix, suffix = special_frame(tok)
    pad = ckpt.special_ids["pad"]
    mask_id = ckpt.special_ids.get("mask")

    def sequence(length: int) -> list[int]:
        room = max(length - len(prefix) - len(suffix), 1)
        content = (body * (room // max(len(body), 1) + 1))[:room]
        return prefix + content + suffix

    singles, mixed = _lengths(ckpt.max_length, ckpt.strategy.local_window(ckpt.config))
    cases = []
    for group in [[n] for n in singles] + mixed:
        rows = [sequence(n) for n in group]
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), pad, dtype=np.int64)
        mask = np.zeros_like(ids)
        positions = []
        for b, row in enumerate(rows):
            ids[b, : len(row)] = row
            mask[b, : len(row)] = 1
            if ckpt.has_mlm_head and mask_id is not None and len(row) > 3:
                for s in sorted({1, len(row) // 2, len(row) - 2}):
                    ids[b, s] = mask_id
                    positions.append(b * width + s)
        case = {mf.INPUT_IDS: ids, mf.ATTENTION_MASK: mask}
        if ckpt.has_mlm_head:
            case[mf.MASK_POSITIONS] = np.asarray(positions, dtype=np.int64)
        cases.append(case)
    return cases


def special_frame(tok: Any) -> tuple[list[int], list[int]]:
    """The special ids the tokenizer's post-processor puts before and after a text."""
    framed = tok.encode("x").ids
    inner = tok.encode("x", add_special_tokens=False).ids
    start = next(i for i in range(len(framed)) if framed[i : i + len(inner)] == inner)
    return framed[:start], framed[start + len(inner) :]


def _tie_aware_ids(got: Any, ref: Any, scores: Any, tol: Tolerance) -> tuple[Any, Any]:
    """0 / 1 per rank: an id differing from PyTorch's counts only where its score is not tied with a neighbour."""
    near = np.zeros(scores.shape, bool)
    close = np.abs(np.diff(scores, axis=-1)) <= tol.atol + tol.rtol * np.abs(scores[:, 1:])
    near[:, 1:] |= close
    near[:, :-1] |= close
    return ((got != ref) & ~near).astype(np.float64), np.zeros(got.shape)


def validate(ckpt: Any, module: Any, onnx_path: str, tol: Tolerance) -> dict[str, Any]:
    """Run every case through PyTorch and onnxruntime; raise ValidationError above tolerance."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    worst: dict[str, float] = {n: 0.0 for n in names}
    failures: dict[str, float] = {}
    min_cos = 1.0
    shapes = []
    for case in build_cases(ckpt):
        shapes.append(list(case[mf.INPUT_IDS].shape))
        feeds = graph_feeds([i.name for i in session.get_inputs()], case[mf.INPUT_IDS], case[mf.ATTENTION_MASK],
                            case.get(mf.MASK_POSITIONS), DEFAULT_K)
        got = dict(zip(names, session.run(None, feeds)))
        with torch.no_grad():
            ref_t = module(*(torch.from_numpy(case[n]) for n in case))
        ref = dict(zip(names, (t.numpy() for t in ref_t)))
        if mf.MASK_TOP_SCORES in names:  # the graph's own top k (export/topk.py) against PyTorch's logits
            ref[mf.MASK_TOP_SCORES], ref[mf.MASK_TOP_IDS] = reference_top_k(ref[mf.MASK_LOGITS])
        valid = case[mf.ATTENTION_MASK].astype(bool)
        for name in names:
            a, b = got[name], ref[name]
            if name == mf.TOKEN_EMBEDDINGS:  # padded positions carry no meaning
                a, b = a[valid], b[valid]
            if a.shape != b.shape:
                raise ValidationError(f"output {name}: onnx shape {a.shape} != torch shape {b.shape}")
            if not a.size:
                continue
            if name == mf.MASK_TOP_IDS:  # ids may swap only where two scores tie within tolerance
                a, b = _tie_aware_ids(a, b, got[mf.MASK_TOP_SCORES], tol)
            diff = np.abs(a - b)
            worst[name] = max(worst[name], float(diff.max()))
            excess = float((diff - (tol.atol + tol.rtol * np.abs(b))).max())
            if excess > 0:
                failures[name] = max(failures.get(name, 0.0), worst[name])
        a, b = got[mf.SENTENCE_EMBEDDING], ref[mf.SENTENCE_EMBEDDING]
        cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
        min_cos = min(min_cos, float(cos.min()))
    if failures:
        detail = ", ".join(f"{n} max abs diff {v:.2e}" for n, v in failures.items())
        raise ValidationError(
            f"ONNX output differs from PyTorch beyond atol={tol.atol:g}, rtol={tol.rtol:g} ({detail}): "
            "this is an exporter bug; report it with the versions in use"
        )
    return {
        "reference": "pytorch",
        "cases": shapes,
        "max_abs_diff": worst,
        "min_sentence_cosine": min_cos,
        "atol": tol.atol,
        "rtol": tol.rtol,
        "passed": True,
    }
