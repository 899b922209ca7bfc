"""One timing policy for every contender: warm-up, then repeat until a time budget and a minimum count."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TimingPolicy:
    """Repeat until ``budget_s`` has passed and ``min_iters`` calls are in, at most ``max_iters``.

    Heavy rows (seconds per call) end at ``min_iters``; their p99 is then the slowest of few
    calls, which the row's ``iters`` says.
    """

    warmup: int = 1
    min_iters: int = 3
    max_iters: int = 50
    budget_s: float = 5.0


def measure(call: Callable[[], Any], policy: TimingPolicy) -> list[float]:
    for _ in range(policy.warmup):
        call()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < policy.max_iters and (len(times) < policy.min_iters or time.perf_counter() - start < policy.budget_s):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return times


def median_ms(call: Callable[[], Any], runs: int) -> float:
    """Median of ``runs`` timed calls after one warm-up, in ms (the one-off measurement scripts)."""
    times = measure(call, TimingPolicy(warmup=1, min_iters=runs, max_iters=runs, budget_s=0.0))
    return float(np.median(times) * 1e3)


def summarize(times: list[float], texts: int, tokens: int) -> dict[str, float]:
    ms = np.asarray(times) * 1000.0
    mean_s = float(np.mean(times))
    return {
        "iters": len(times),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p90_ms": round(float(np.percentile(ms, 90)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(mean_s * 1000.0, 3),
        "seq_per_s": round(texts / mean_s, 2),
        "tok_per_s": round(tokens / mean_s, 1),
    }
