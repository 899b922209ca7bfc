"""Per-row int8 MatMuls: batch-invariant, and safe from the AVX2 kernel's 16-bit saturation.

onnxruntime's dynamic int8 (DynamicQuantizeMatMul) picks ONE activation scale per call, over the
whole padded batch: a text's vector then depends on what it is batched with (min cosine 0.994 on
a real multilingual BERT, as large as the quantization error itself). Here every row (token) gets
its own symmetric scale, computed from that row alone:

    s   = max(|x_row|) / 127                         ReduceMax over the last axis
    xq  = QuantizeLinear(x / s, 1, 128)              uint8 in [1, 255], zero point 128
    y   = MatMulInteger(xq, Wq, 128) * s * w_scale   exact int32 accumulation, then scales

A row's result depends only on that row, so padding and batch neighbours cannot change it.

Weights are per output channel with 7-bit levels (|w| <= 63). On x86 CPUs without VNNI (AVX2
only) onnxruntime's u8 x s8 kernel adds adjacent products in 16 bits with saturation
(vpmaddubsw): |a1*w1 + a2*w2| <= 2 * 255 * 63 = 32130 <= 32767, so it can never saturate.
``saturation.py`` proves it on the built graph and emulates the kernel.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from polyglot_onnx.errors import QuantizeError
from polyglot_onnx.graph_toolkit import PassReport, initializers, used_names, weight_matmuls

ACTIVATION_LEVELS = 127  # symmetric int8 activations, stored as uint8 around zero point 128
ACTIVATION_ZERO_POINT = 128
WEIGHT_LEVELS = 63  # 7-bit weights: the AVX2 pairwise 16-bit add cannot saturate (see module doc)


def quantize_weight(
    w: np.ndarray, levels: int = WEIGHT_LEVELS, per_channel: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8: ([K, N] int8 in [-levels, levels], fp32 scales: [N] per channel, else [1])."""
    wmax = np.abs(w).max(axis=0) if per_channel else np.abs(w).max(keepdims=True).reshape(1)
    scale = np.where(wmax == 0, 1.0, wmax / levels).astype(np.float32)
    q = np.clip(np.rint(w / scale), -levels, levels).astype(np.int8)
    return q, scale


def row_constants() -> list[Any]:
    """The scalar initializers the per-row subgraph reads (shared by every quantized MatMul)."""
    from onnx import numpy_helper

    consts = {
        "rowq.inv_levels": np.array(1.0 / ACTIVATION_LEVELS, dtype=np.float32),
        "rowq.tiny": np.array(np.finfo(np.float32).tiny, dtype=np.float32),
        "rowq.one": np.array(1.0, dtype=np.float32),
        "rowq.zero_point": np.array(ACTIVATION_ZERO_POINT, dtype=np.uint8),
        "rowq.last_axis": np.array([-1], dtype=np.int64),
    }
    return [numpy_helper.from_array(v, k) for k, v in consts.items()]


class QuantizeMatMulsPerRow:
    """Replaces every weight MatMul (but those in ``keep``) with the per-row int8 subgraph above."""

    def __init__(self, keep: tuple[str, ...] = (), weight_levels: int = WEIGHT_LEVELS, per_channel: bool = True) -> None:
        self.keep = set(keep)
        self.weight_levels = weight_levels
        self.per_channel = per_channel

    def apply(self, model: Any) -> PassReport:
        from onnx import TensorProto, helper, numpy_helper

        inits = initializers(model)
        targets = [n for n in weight_matmuls(model) if n.name not in self.keep]
        main = {id(n) for n in model.graph.node}  # one set, not a graph walk per target
        branched = [n.name for n in targets if id(n) not in main]
        if branched:  # rewritten in place below: a MatMul inside an If branch would be missed, not quantized
            raise QuantizeError(f"weight MatMul {branched[0]!r} sits inside an If branch, which the per-row int8 "
                                "pass does not rewrite: keep it in fp32 with --keep-fp32, or report the model")
        new_inits = row_constants() if targets else []
        quantized_input: dict[str, tuple[str, str]] = {}  # activation -> (uint8 tensor, row scale)
        nodes = list(model.graph.node)
        bytes_before = bytes_after = 0
        for node in targets:
            x, w_name, y = node.input[0], node.input[1], node.output[0]
            tag = node.name or y
            prologue: list[Any] = []
            if x not in quantized_input:
                t = f"{x}.rowq"
                prologue = [
                    helper.make_node("Abs", [x], [f"{t}.abs"], name=f"{t}.abs"),
                    helper.make_node("ReduceMax", [f"{t}.abs", "rowq.last_axis"], [f"{t}.max"], name=f"{t}.max",
                                     keepdims=1),
                    helper.make_node("Mul", [f"{t}.max", "rowq.inv_levels"], [f"{t}.s0"], name=f"{t}.s0"),
                    # an all-zero row gets the smallest normal scale: it quantizes to zeros, not NaN
                    helper.make_node("Max", [f"{t}.s0", "rowq.tiny"], [f"{t}.scale"], name=f"{t}.scale"),
                    helper.make_node("Div", [x, f"{t}.scale"], [f"{t}.unit"], name=f"{t}.unit"),
                    helper.make_node("QuantizeLinear", [f"{t}.unit", "rowq.one", "rowq.zero_point"], [f"{t}.u8"],
                                     name=f"{t}.u8"),
                ]
                quantized_input[x] = (f"{t}.u8", f"{t}.scale")
            xq, row_scale = quantized_input[x]
            weight = numpy_helper.to_array(inits[w_name])
            wq, w_scale = quantize_weight(weight, self.weight_levels, self.per_channel)
            new_inits += [numpy_helper.from_array(wq, f"{w_name}.rowq_w"), numpy_helper.from_array(w_scale, f"{w_name}.rowq_ws")]
            bytes_before += weight.nbytes
            bytes_after += wq.nbytes + w_scale.nbytes
            body = [
                helper.make_node("MatMulInteger", [xq, f"{w_name}.rowq_w", "rowq.zero_point"], [f"{tag}.i32"],
                                 name=f"{tag}.rowq_mm"),
                helper.make_node("Cast", [f"{tag}.i32"], [f"{tag}.f32"], name=f"{tag}.rowq_cast", to=TensorProto.FLOAT),
                helper.make_node("Mul", [f"{tag}.f32", row_scale], [f"{tag}.rows"], name=f"{tag}.rowq_rows"),
                helper.make_node("Mul", [f"{tag}.rows", f"{w_name}.rowq_ws"], [y], name=f"{tag}.rowq_cols"),
            ]
            at = nodes.index(node)
            nodes[at : at + 1] = prologue + body
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        replaced = {n.input[1] for n in targets}
        still_used = used_names(model.graph)  # If branches read outer initializers too
        kept = [i for i in model.graph.initializer if i.name not in replaced or i.name in still_used]
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept + new_inits)
        return PassReport("rowwise-int8", {
            "matmuls": len(targets),
            "shared_inputs": len(targets) - len(quantized_input),  # activations quantized once for Q/K/V
            "kept_fp32": len(self.keep),
            "weight_levels": self.weight_levels,
            "bytes_before": bytes_before,
            "bytes_after": bytes_after,
        })
