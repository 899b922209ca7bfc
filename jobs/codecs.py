"""Stored vector types: float32, float16, int8 (calibrated scales) and binary (sign bits).

int8 uses one symmetric scale per dimension, measured once on the job's first chunk and stored in
``_run.json`` and in every shard's metadata: every shard is quantized with the same scales, so int8
vectors from different shards (and from a resumed run) are directly comparable. To get floats back:
``x ~= q * scale``; for cosine / dot-product search the scales can be folded into the query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

INT8_MAX = 127


@dataclass(frozen=True)
class Codec:
    """How one float32 [n, hidden] block is stored; ``scales`` only for int8."""

    dtype: str
    dimension: int
    scales: tuple[float, ...] | None = None

    def arrow_value_type(self) -> Any:
        import pyarrow as pa

        return {"float32": pa.float32(), "float16": pa.float16(), "int8": pa.int8(), "binary": pa.uint8()}[self.dtype]

    @property
    def width(self) -> int:
        """Values per stored vector: the hidden size, or a byte per 8 dimensions for binary."""
        return -(-self.dimension // 8) if self.dtype == "binary" else self.dimension

    def encode(self, x: np.ndarray) -> np.ndarray:
        if self.dtype == "float32":
            return np.ascontiguousarray(x, dtype=np.float32)
        if self.dtype == "float16":
            return x.astype(np.float16)
        if self.dtype == "binary":
            return np.packbits(x > 0, axis=-1)
        if self.scales is None:
            raise ValueError("int8 codec used before calibration")
        scales = np.asarray(self.scales, dtype=np.float32)
        return np.clip(np.rint(x / scales), -INT8_MAX, INT8_MAX).astype(np.int8)

    def metadata(self) -> dict[str, Any]:
        data: dict[str, Any] = {"dtype": self.dtype, "dimension": self.dimension}
        if self.dtype == "int8":
            data.update(scheme="symmetric per-dimension, scale = max|x| / 127 over the first chunk",
                        dequantize="x = q * scales", scales=list(self.scales or ()))
        if self.dtype == "binary":
            data.update(scheme="sign bits, numpy.packbits(x > 0) (big-endian bit order)")
        return data

    @classmethod
    def from_metadata(cls, data: dict[str, Any]) -> Codec:
        scales = data.get("scales")
        return cls(data["dtype"], int(data["dimension"]), tuple(float(s) for s in scales) if scales else None)


def calibrate(dtype: str, dimension: int, sample: np.ndarray) -> Codec:
    """The codec for this job; int8 scales come from ``sample`` (the first chunk's vectors)."""
    if dtype != "int8":
        return Codec(dtype, dimension)
    if len(sample) == 0:
        scales = np.full(dimension, 1.0 / INT8_MAX, dtype=np.float32)
    else:
        scales = np.maximum(np.abs(sample).max(axis=0), 1e-12).astype(np.float32) / INT8_MAX
    return Codec(dtype, dimension, tuple(float(s) for s in scales))
