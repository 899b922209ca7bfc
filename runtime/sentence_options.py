"""sentence-transformers' encode options, in numpy: prompts, Matryoshka truncation, quantized embeddings.

Each follows sentence_transformers exactly (prompt prepended to the text and pooled with it;
truncate, then normalize, then quantize; int8 / uint8 buckets from the given ranges or the batch
itself; binary as packed sign bits), so vectors are bit-identical for the same float inputs.
"""

from __future__ import annotations

import numpy as np

from polyglot_onnx.errors import InputError
from polyglot_onnx.manifest import ModelInfo

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")


def resolve_prompt(model: ModelInfo, prompt_name: str | None, prompt: str | None) -> str | None:
    """An explicit ``prompt`` wins, then ``prompt_name``, then the package's default prompt."""
    if prompt is not None:
        if not isinstance(prompt, str):
            raise InputError(f"prompt must be a string, not {type(prompt).__name__}")
        return prompt
    name = prompt_name if prompt_name is not None else model.default_prompt_name
    if name is None:
        return None
    if name not in model.prompts:
        known = ", ".join(sorted(model.prompts)) or "none"
        raise InputError(f"unknown prompt name {name!r}: this package's prompts are {known} (or pass prompt='...')")
    return model.prompts[name]


def with_prompt(texts: list[str], prompt: str | None) -> list[str]:
    return [prompt + text for text in texts] if prompt else texts


def normalized(x: np.ndarray) -> np.ndarray:
    """Unit length along the last axis (a zero vector stays zero): the runtime's and the server's one rule."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    out: np.ndarray = x / np.maximum(norm, 1e-12)
    return out


def check_dimensions(dimensions: int | None, width: int) -> None:
    if dimensions is None:
        return
    if isinstance(dimensions, bool) or not isinstance(dimensions, int) or not 1 <= dimensions <= width:
        raise InputError(f"dimensions must be an integer from 1 to {width}, not {dimensions!r}")


def check_precision(precision: str, ranges: np.ndarray | None, width: int) -> None:
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}: choose {', '.join(PRECISIONS)}")
    if ranges is not None:
        shape = np.shape(ranges)
        if precision not in ("int8", "uint8") or shape != (2, width):
            raise InputError(f"ranges must be a (2, {width}) array of per-dimension min/max, for int8 or uint8 only")


def quantize(embeddings: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """sentence_transformers.quantize_embeddings for one float32 [n, dim] matrix."""
    if precision == "float32":
        return embeddings.astype(np.float32)
    if precision in ("int8", "uint8"):
        if ranges is None:
            if embeddings.shape[0] < 2:
                raise InputError(
                    f"{precision} needs ranges (per-dimension min and max) to quantize a single embedding: "
                    "pass ranges= computed from a representative set"
                )
            ranges = np.vstack((np.min(embeddings, axis=0), np.max(embeddings, axis=0)))
        ranges = np.asarray(ranges).astype(np.float32, copy=False)
        starts = ranges[0, :]
        steps = (ranges[1, :] - starts) / 255
        steps = np.where(steps == 0, 1, steps)
        buckets = np.clip(np.floor((embeddings - starts) / steps), 0, 255)
        out: np.ndarray = buckets.astype(np.uint8) if precision == "uint8" else (buckets - 128).astype(np.int8)
        return out
    packed = np.packbits(embeddings > 0, axis=-1)
    return (packed - 128).astype(np.int8) if precision == "binary" else packed
