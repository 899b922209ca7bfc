"""The speed targets as data: which row of ours, against which contender, and the ratio to reach.

Ratios are "how many times better ours is": latency rows compare p50, corpus rows throughput,
peak rows the fraction of the measured peak (int8 MatMul on CPU, fp16 GEMM on CUDA), budget rows the time
budget over the p50 (>= 1 is within budget); ``theirs_task`` compares two tasks of one contender at one shape
(fill-mask against embed), ``factor`` scales their time (fill-mask within 1.5x of embed). A target whose rows are missing from
a run (another model, a contender left out) is reported as not measured, never as met.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Target:
    name: str
    models: tuple[str, ...]
    task: str
    ours: str  # contender label, e.g. "polyglot:int8"
    theirs: str | None  # None for the peak-fraction target
    minimum: float
    batch: int | None = None  # None: every batch measured
    seq: int | None = None  # None: every sequence length measured
    kind: str = "fixed"
    provider: str = "cpu"
    theirs_task: str | None = None  # another task of ``theirs`` at the same shape (None: the same task)
    factor: float = 1.0  # their time is scaled by this before the ratio
    budget_ms: float | None = None  # with theirs=None: an absolute p50 budget instead of a peak fraction


TARGETS: tuple[Target, ...] = (
    Target("fill-mask int8 vs Optimum int8", ("mbert-cased",), "fill-mask", "polyglot:int8", "optimum:int8", 2.0, 1, 128),
    Target("fill-mask int8 vs PyTorch eager", ("mbert-cased",), "fill-mask", "polyglot:int8", "torch:fp32", 6.5, 1, 128),
    Target("fill-mask int8 vs Optimum int8", ("mmbert-base",), "fill-mask", "polyglot:int8", "optimum:int8", 3.0, 1, 128),
    Target("fill-mask int8 vs PyTorch eager", ("mmbert-base",), "fill-mask", "polyglot:int8", "torch:fp32", 8.0, 1, 128),
    Target("embed int8 vs Optimum int8, batch 1", ("mbert-cased", "mmbert-base"), "embed", "polyglot:int8",
           "optimum:int8", 1.2, 1, None),
    Target("embed int8 corpus throughput vs Optimum int8", ("mbert-cased", "mmbert-base"), "embed", "polyglot:int8",
           "optimum:int8", 2.0, kind="corpus"),
    Target("fill-mask fp32 never slower than Optimum O2", ("mbert-cased", "mmbert-base"), "fill-mask", "polyglot:fp32",
           "optimum:O2", 1.0),
    Target("embed fp32 never slower than Optimum O2", ("mbert-cased", "mmbert-base"), "embed", "polyglot:fp32",
           "optimum:O2", 1.0),
    Target("int8 encoder share of int8 MatMul peak", ("mbert-cased", "mmbert-base"), "embed", "polyglot:int8", None,
           0.75, 1, 128),
    # Long inputs (banded local attention): ModernBERT at 2,048 and 8,192 tokens, batch 1
    Target("embed int8 vs Optimum int8 at 8,192", ("mmbert-base",), "embed", "polyglot:int8", "optimum:int8", 2.0,
           1, 8192),
    Target("embed int8 banded vs own dense graph at 8,192", ("mmbert-base",), "embed", "polyglot:int8", "dense:int8",
           1.7, 1, 8192),
    Target("embed fp32 vs Optimum O2 at 8,192", ("mmbert-base",), "embed", "polyglot:fp32", "optimum:O2", 1.5, 1, 8192),
    Target("embed int8 vs Optimum int8 at 2,048", ("mmbert-base",), "embed", "polyglot:int8", "optimum:int8", 1.5,
           1, 2048),
    Target("embed int8 banded vs dense, no regression at any length", ("mmbert-base",), "embed", "polyglot:int8",
           "dense:int8", 0.9, 1, None),
    # CUDA (issue: the fastest graph ORT CUDA can run); scripts/cuda_check.sh runs every row these need
    Target("embed fp16 vs PyTorch fp16 SDPA, b64 x 512", ("mbert-cased", "mmbert-base"), "embed", "polyglot:fp16",
           "torch:fp16", 2.0, 64, 512, provider="cuda"),
    Target("embed fp16 vs ORT optimizer fp16 (Optimum O4's graph), b64 x 512", ("mbert-cased", "mmbert-base"), "embed",
           "polyglot:fp16", "ortopt:fp16", 1.3, 64, 512, provider="cuda"),
    Target("embed fp16 share of the GPU fp16 peak, b64 x 512", ("mbert-cased", "mmbert-base"), "embed",
           "polyglot:fp16", None, 0.40, 64, 512, provider="cuda"),
    Target("embed fp16 b1 x 128 within 1.0 ms", ("mbert-cased", "mmbert-base"), "embed", "polyglot:fp16", None, 1.0,
           1, 128, provider="cuda", budget_ms=1.0),
    Target("embed fp16 never slower than fp32 on CUDA", ("mbert-cased", "mmbert-base"), "embed", "polyglot:fp16",
           "polyglot:fp32", 1.0, provider="cuda"),
    Target("embed fp16 banded vs PyTorch fp16 SDPA at 8,192", ("mmbert-base",), "embed", "polyglot:fp16",
           "torch:fp16", 2.0, 1, 8192, provider="cuda"),
    Target("fill-mask fp16 b64 x 128 within 1.5x of embed", ("mbert-cased", "mmbert-base"), "fill-mask",
           "polyglot:fp16", "polyglot:fp16", 1.0, 64, 128, provider="cuda", theirs_task="embed", factor=1.5),
    Target("mixed-length corpus fp16 vs PyTorch fp16 throughput", ("mbert-cased", "mmbert-base"), "embed",
           "polyglot:fp16", "torch:fp16", 2.0, kind="corpus", provider="cuda"),
)


def _matches(row: dict[str, Any], target: Target, label: str, task: str | None = None) -> bool:
    return (row.get("label") == label and row["task"] == (task or target.task) and row["kind"] == target.kind
            and row["provider"] == target.provider and (target.batch is None or row["batch"] == target.batch)
            and (target.seq is None or row["seq"] == target.seq) and "p50_ms" in row)


def evaluate(rows: list[dict[str, Any]], model: str) -> list[dict[str, Any]]:
    """Each target of ``model``: the worst measured ratio over its rows, and whether it is met."""
    results = []
    for target in TARGETS:
        if model not in target.models:
            continue
        ratios: list[tuple[float, str]] = []
        for row in rows:
            if not _matches(row, target, target.ours):
                continue
            where = f"b{row['batch']} s{row['seq']}" if row["kind"] == "fixed" else "corpus"
            if target.theirs is None:
                if target.budget_ms is not None:
                    ratios.append((target.budget_ms / row["p50_ms"], where))
                elif row.get("peak_ratio") is not None:
                    ratios.append((row["peak_ratio"], where))
                continue
            other = next((r for r in rows if _matches(r, target, target.theirs, target.theirs_task)
                          and r["batch"] == row["batch"] and r["seq"] == row["seq"]), None)
            if other is not None:
                ratios.append((speedup(row, other) * target.factor, where))
        against = (f"{target.theirs} {target.theirs_task}" if target.theirs_task else target.theirs) or (
            f"{target.budget_ms} ms budget" if target.budget_ms is not None else "peak")
        entry: dict[str, Any] = {"target": target.name, "ours": target.ours, "theirs": against,
                                 "minimum": target.minimum, "provider": target.provider}
        if ratios:
            worst, where = min(ratios)
            entry.update(measured=round(worst, 3), at=where, met=worst >= target.minimum, rows=len(ratios))
        else:
            entry.update(measured=None, at=None, met=None, rows=0)
        results.append(entry)
    return results


def speedup(ours: dict[str, Any], theirs: dict[str, Any]) -> float:
    """Latency ratio for fixed rows (p50), throughput ratio for the corpus run."""
    if ours["kind"] == "fixed":
        return theirs["p50_ms"] / ours["p50_ms"]
    return ours["tok_per_s"] / theirs["tok_per_s"]
