"""Per-text drift metrics and their aggregation (numpy only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from polyglot_onnx.gates import DIRECTIONS  # noqa: F401 - re-exported for the drift checker


@dataclass(frozen=True)
class TextDrift:
    """One text under one variant, against the reference."""

    language: str
    script: str
    sentence_cosine: float
    token_max_abs: float
    token_rel_error: float
    nonfinite: int
    top1: float | None = None
    top5: float | None = None
    kl: float | None = None
    top1_exact: float | None = None


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    denom = np.linalg.norm(a64) * np.linalg.norm(b64)
    return float(a64 @ b64 / denom) if denom > 0 else 0.0


def log_softmax(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    shifted = x64 - x64.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


TIE = 1e-2  # reference probabilities within 1% (relative) of its maximum count as the same top-1


def mask_agreement(ref: np.ndarray, var: np.ndarray) -> tuple[float, float, float, float]:
    """(top-1 agreement, top-5 overlap fraction, KL(ref || var), exact top-1) for one mask's logits.

    A variant choosing a token the reference scores as a tie with its best (within TIE, relative)
    agrees: near-uniform heads (untrained weights) would otherwise flip on rounding noise alone.
    """
    lp, lq = log_softmax(ref), log_softmax(var)
    k = min(5, ref.shape[-1])
    top_ref = np.argpartition(-ref, k - 1)[:k]
    top_var = np.argpartition(-var, k - 1)[:k]
    agree = float(lp[int(np.argmax(var))] >= lp.max() + np.log1p(-TIE))
    overlap = len(set(top_ref.tolist()) & set(top_var.tolist())) / k
    exact = float(np.argmax(ref) == np.argmax(var))
    kl = float(np.sum(np.exp(lp) * (lp - lq)))
    return agree, overlap, max(kl, 0.0), exact


def text_drift(
    language: str,
    script: str,
    ref_tokens: np.ndarray,
    var_tokens: np.ndarray,
    ref_sentence: np.ndarray,
    var_sentence: np.ndarray,
    logits: tuple[np.ndarray, np.ndarray] | None,
) -> TextDrift:
    nonfinite = int((~np.isfinite(var_tokens)).sum() + (~np.isfinite(var_sentence)).sum())
    diff = np.nan_to_num(var_tokens.astype(np.float64) - ref_tokens, nan=np.inf)
    ref_norm = float(np.linalg.norm(ref_tokens))
    fill: dict[str, Any] = {}
    if logits is not None:
        nonfinite += int((~np.isfinite(logits[1])).sum())
        fill = dict(zip(("top1", "top5", "kl", "top1_exact"), mask_agreement(*logits)))
    return TextDrift(
        language=language,
        script=script,
        sentence_cosine=cosine(ref_sentence, var_sentence) if np.isfinite(var_sentence).all() else -1.0,
        token_max_abs=float(np.abs(diff).max()),
        token_rel_error=float(np.linalg.norm(diff) / ref_norm) if ref_norm > 0 else float("inf"),
        nonfinite=nonfinite,
        **fill,
    )


def aggregate(rows: list[TextDrift]) -> dict[str, Any]:
    """Summary of a group of texts: the figures the gate and the report read."""
    cos = np.array([r.sentence_cosine for r in rows])
    out: dict[str, Any] = {
        "texts": len(rows),
        "sentence_cosine_mean": float(cos.mean()),
        "sentence_cosine_p5": float(np.percentile(cos, 5)),
        "sentence_cosine_min": float(cos.min()),
        "token_max_abs": float(max(r.token_max_abs for r in rows)),
        "token_rel_error": float(np.mean([r.token_rel_error for r in rows])),
        "nonfinite": int(sum(r.nonfinite for r in rows)),
    }
    masked = [r for r in rows if r.top1 is not None]
    if masked:
        out["top1_agreement"] = float(np.mean([r.top1 for r in masked]))
        out["top5_overlap"] = float(np.mean([r.top5 for r in masked]))
        out["kl_mean"] = float(np.mean([r.kl for r in masked]))
        out["top1_exact"] = float(np.mean([r.top1_exact for r in masked]))  # informational, not gated
    return out


def grouped(rows: list[TextDrift], key: str) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[TextDrift]] = {}
    for row in rows:
        groups.setdefault(getattr(row, key), []).append(row)
    return {name: aggregate(group) for name, group in sorted(groups.items())}

