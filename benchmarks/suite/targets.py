"""The speed targets as data: which row of ours, against which contender, and the ratio to reach.

Ratios are "how many times better ours is": latency rows compare p50, corpus rows throughput,
peak rows the fraction of the measured int8 MatMul peak. A target whose rows are missing from
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
    Target("fp16 throughput vs Optimum O4, b64 x 512", ("mmbert-base",), "embed", "polyglot:fp16", "optimum:O4", 1.5,
           64, 512, provider="cuda"),
    Target("fp16 throughput vs PyTorch SDPA fp16, b64 x 512", ("mmbert-base",), "embed", "polyglot:fp16", "torch:fp16",
           1.2, 64, 512, provider="cuda"),
)


def _matches(row: dict[str, Any], target: Target, label: str) -> bool:
    return (row.get("label") == label and row["task"] == target.task and row["kind"] == target.kind
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
                if row.get("peak_ratio") is not None:
                    ratios.append((row["peak_ratio"], where))
                continue
            other = next((r for r in rows if _matches(r, target, target.theirs) and r["batch"] == row["batch"]
                          and r["seq"] == row["seq"]), None)
            if other is not None:
                ratios.append((speedup(row, other), where))
        entry: dict[str, Any] = {"target": target.name, "ours": target.ours, "theirs": target.theirs or "int8 peak",
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
