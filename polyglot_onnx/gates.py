"""Accuracy gates per variant: plain data shared by the drift checker and the runtime self-check.

It lives outside quantize/ so the runtime can read it without importing onnx.
"""

from __future__ import annotations

# Gate direction per metric: "min" -> the value must be >= the threshold, "max" -> <= it.
DIRECTIONS: dict[str, str] = {
    "sentence_cosine_mean": "min",
    "sentence_cosine_p5": "min",
    "sentence_cosine_min": "min",
    "token_max_abs": "max",
    "token_rel_error": "max",
    "top1_agreement": "min",
    "top5_overlap": "min",
    "kl_mean": "max",
    "nonfinite": "max",
}

# Default gates per variant (docs/quantize.md); every language must pass, not just the mean.
DEFAULT_GATES: dict[str, dict[str, float]] = {
    "fp32": {"sentence_cosine_min": 0.9999, "top1_agreement": 0.99, "kl_mean": 1e-4, "nonfinite": 0},
    "fp16": {"sentence_cosine_min": 0.999, "top1_agreement": 0.95, "kl_mean": 0.005, "nonfinite": 0},
    "int8": {
        "sentence_cosine_p5": 0.98,
        "sentence_cosine_min": 0.95,
        "top1_agreement": 0.80,
        "top5_overlap": 0.70,
        "kl_mean": 0.10,
        "nonfinite": 0,
    },
}
DEFAULT_GATES["int8-static"] = DEFAULT_GATES["int8"]
DEFAULT_GATES["int8-mixed"] = DEFAULT_GATES["int8"]


def gate_for(variant: str, overrides: dict[str, float] | None = None) -> dict[str, float]:
    base = dict(DEFAULT_GATES.get(variant, DEFAULT_GATES["int8"]))
    return base | (overrides or {})


def is_failing(metric: str, value: float, threshold: float) -> bool:
    return value < threshold if DIRECTIONS[metric] == "min" else value > threshold
