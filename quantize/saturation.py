"""The AVX2 u8 x s8 kernel's 16-bit saturation: an exact numpy emulation and a proof on the graph.

On x86 without VNNI, onnxruntime's int8 GEMM (MLAS, u8 activations x s8 weights) multiplies
bytes with ``vpmaddubsw``: products of adjacent K positions are added in a signed 16-bit lane
that saturates at +-32767, then ``vpmaddwd`` widens to int32. VNNI (``vpdpbusd``) and ARM's dot
product accumulate straight into int32 and never saturate, so the same package gives different
answers on different CPUs unless every weight pair bounds the sum. The raw uint8 values enter
the products (the zero point is corrected afterwards), so the bound is over a in [0, 255].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

INT16_MAX = 32767
U8_MAX = 255
# Nodes whose weight input meets the u8 x s8 kernel: weight input index per operator.
# (QDQ graphs: onnxruntime fuses DequantizeLinear(int8 weight) -> MatMul into the same kernels.)
U8S8_WEIGHT_INPUT = {"MatMulInteger": 1, "DynamicQuantizeMatMul": 1, "MatMulIntegerToFloat": 1, "DequantizeLinear": 0}


def _pad_k(a: np.ndarray, axis: int) -> np.ndarray:
    if a.shape[axis] % 2 == 0:
        return a
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, 1)
    return np.pad(a, pad)


def avx2_u8s8_matmul(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """int32 [M, N] as the AVX2 kernel computes sum_k a[m, k] * w[k, n] (a uint8, w int8).

    Adjacent pairs (k, k+1), k even, are summed and clipped to int16 (vpmaddubsw), then the
    pair sums are added exactly in int32 (vpmaddwd + vpaddd).
    """
    a16 = _pad_k(np.asarray(a, dtype=np.int32), 1)
    w16 = _pad_k(np.asarray(w, dtype=np.int32), 0)
    m, k = a16.shape
    pa = a16.reshape(m, k // 2, 2)
    pw = w16.reshape(k // 2, 2, -1)
    pair_sums = np.einsum("mpi,pin->mpn", pa, pw)  # [M, K/2, N], exact
    return np.clip(pair_sums, -INT16_MAX - 1, INT16_MAX).sum(axis=1).astype(np.int32)


def exact_u8s8_matmul(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (np.asarray(a, dtype=np.int64) @ np.asarray(w, dtype=np.int64)).astype(np.int32)


def worst_pair_sum(w: np.ndarray) -> int:
    """max over pairs and columns of |a1*w1 + a2*w2| for any a1, a2 in [0, 255].

    With non-negative activations the worst case puts 255 on the weights of one sign: the bound
    is 255 * max(sum of the pair's positive weights, sum of its negative magnitudes).
    """
    w32 = _pad_k(np.asarray(w, dtype=np.int64), 0)
    pw = w32.reshape(w32.shape[0] // 2, 2, -1)
    pos = np.clip(pw, 0, None).sum(axis=1)
    neg = np.clip(-pw, 0, None).sum(axis=1)
    return int(U8_MAX * max(int(pos.max(initial=0)), int(neg.max(initial=0))))


def saturating_input(w: np.ndarray) -> np.ndarray | None:
    """A u8 activation row that makes the AVX2 kernel saturate on ``w``, or None if none can."""
    w32 = _pad_k(np.asarray(w, dtype=np.int64), 0)
    k = w32.shape[0]
    pw = w32.reshape(k // 2, 2, -1)
    for sign in (1, -1):
        part = np.clip(sign * pw, 0, None).sum(axis=1)  # [pairs, N]
        p, n = np.unravel_index(int(part.argmax()), part.shape)
        if U8_MAX * part[p, n] > INT16_MAX:
            row = np.zeros(k, dtype=np.uint8)
            row[2 * p : 2 * p + 2] = np.where(sign * pw[p, :, n] > 0, U8_MAX, 0)
            return row[: w.shape[0]]
    return None


@dataclass
class SaturationReport:
    checked: int = 0  # u8 x s8 weight tensors checked
    worst: int = 0  # largest |a1*w1 + a2*w2| any of them allows
    unsafe: list[str] = field(default_factory=list)  # weights that can saturate on AVX2

    @property
    def safe(self) -> bool:
        return not self.unsafe

    def as_dict(self) -> dict[str, Any]:
        return {"checked": self.checked, "worst_pair_sum": self.worst, "limit": INT16_MAX, "safe": self.safe,
                "unsafe": self.unsafe[:10], "unsafe_count": len(self.unsafe)}


def check_graph(model: Any) -> SaturationReport:
    """Proves, from the int8 weights in the graph, whether any u8 x s8 product pair can saturate."""
    from onnx import TensorProto, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    report = SaturationReport()
    for node in model.graph.node:
        index = U8S8_WEIGHT_INPUT.get(node.op_type)
        if index is None or len(node.input) <= index or node.input[index] not in inits:
            continue
        init = inits[node.input[index]]
        if init.data_type != TensorProto.INT8:
            continue
        w = numpy_helper.to_array(init)
        w2 = w.reshape(-1, w.shape[-1]) if w.ndim > 1 else w.reshape(-1, 1)
        worst = worst_pair_sum(w2)
        report.checked += 1
        report.worst = max(report.worst, worst)
        if worst > INT16_MAX:
            report.unsafe.append(init.name)
    return report
