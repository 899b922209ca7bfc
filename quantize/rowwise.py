"""Per-row int8 MatMuls: batch-invariant, and safe from the AVX2 kernel's 16-bit saturation.

onnxruntime's dynamic int8 (DynamicQuantizeMatMul) picks ONE activation scale per call, over the
whole padded batch: a text's vector then depends on what it is batched with (min cosine 0.994 on
a real multilingual BERT, as large as the quantization error itself). Here every row (token) gets
its own symmetric scale, computed from that row alone:

    s   = max(|x_row|) / 127                         ReduceMax over the last axis
    xq  = QuantizeLinear(x, s, 128)                  uint8 in [1, 255]; one block per row (opset 21)
    y   = MatMulIntegerToFloat(xq, Wq, 1, w_scale, 128) * s
                                                     exact int32 accumulation; the column scales are
                                                     applied inside the GEMM, the row scale after it

A row's result depends only on that row, so padding and batch neighbours cannot change it.

Why this shape (revision 4; measured on mBERT b8 x 128 with onnxruntime's profiler, 2 threads, VNNI):
the first version ran MatMulInteger -> Cast -> Mul(row) -> Mul(column) and Div -> QuantizeLinear, five
memory passes over every activation that onnxruntime's DynamicQuantizeMatMul does not pay (Cast alone
was 7% of the run). The column scale now rides in the GEMM's output stage and the row scale is the
blocked QuantizeLinear's own scale, leaving one Mul over the output and the row maximum.

Weights are per output channel with 7-bit levels (|w| <= 63). On x86 CPUs without VNNI (AVX2
only) onnxruntime's u8 x s8 kernel adds adjacent products in 16 bits with saturation
(vpmaddubsw): |a1*w1 + a2*w2| <= 2 * 255 * 63 = 32130 <= 32767, so it can never saturate.
``saturation.py`` proves it on the built graph and emulates the kernel.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from polyglot_onnx.errors import QuantizeError
from polyglot_onnx.graph_toolkit import (
    MS_DOMAIN,
    PassReport,
    default_opset,
    ensure_contrib_opset,
    initializers,
    used_names,
    weight_matmuls,
)

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
        "rowq.zero_point_1d": np.array([ACTIVATION_ZERO_POINT], dtype=np.uint8),
        "rowq.last_axis": np.array([-1], dtype=np.int64),
    }
    return [numpy_helper.from_array(v, k) for k, v in consts.items()]


def row_quantize(x: str, tag: str, hidden: int, blocked: bool = True) -> list[Any]:
    """Nodes that turn activation ``x`` [..., hidden] into (``tag``.u8, ``tag``.scale): uint8 around 128, one
    symmetric scale per row. ``blocked``: one QuantizeLinear whose block is the whole row (opset >= 21);
    else a Div and a per-tensor QuantizeLinear (older graphs), the same numbers in one more pass."""
    from onnx import helper

    t = tag
    nodes = [
        helper.make_node("Abs", [x], [f"{t}.abs"], name=f"{t}.abs"),
        helper.make_node("ReduceMax", [f"{t}.abs", "rowq.last_axis"], [f"{t}.max"], name=f"{t}.max", keepdims=1),
        helper.make_node("Mul", [f"{t}.max", "rowq.inv_levels"], [f"{t}.s0"], name=f"{t}.s0"),
        # an all-zero row gets the smallest normal scale: it quantizes to zeros, not NaN
        helper.make_node("Max", [f"{t}.s0", "rowq.tiny"], [f"{t}.scale"], name=f"{t}.scale"),
    ]
    if not blocked:
        return nodes + [
            helper.make_node("Div", [x, f"{t}.scale"], [f"{t}.unit"], name=f"{t}.unit"),
            helper.make_node("QuantizeLinear", [f"{t}.unit", "rowq.one", "rowq.zero_point"], [f"{t}.u8"], name=f"{t}.u8"),
        ]
    return nodes + [
        # a blocked QuantizeLinear wants its zero point shaped like its scale
        helper.make_node("Shape", [f"{t}.scale"], [f"{t}.shape"], name=f"{t}.shape"),
        helper.make_node("Expand", ["rowq.zero_point_1d", f"{t}.shape"], [f"{t}.zp"], name=f"{t}.zp"),
        helper.make_node("QuantizeLinear", [x, f"{t}.scale", f"{t}.zp"], [f"{t}.u8"], name=f"{t}.u8",
                         axis=-1, block_size=hidden),
    ]


class QuantizeMatMulsPerRow:
    """Replaces every weight MatMul (but those in ``keep``) with the per-row int8 subgraph above."""

    def __init__(self, keep: tuple[str, ...] = (), weight_levels: int = WEIGHT_LEVELS, per_channel: bool = True) -> None:
        self.keep = set(keep)
        self.weight_levels = weight_levels
        self.per_channel = per_channel

    def apply(self, model: Any) -> PassReport:
        from onnx import helper, numpy_helper

        inits = initializers(model)
        targets = [n for n in weight_matmuls(model) if n.name not in self.keep]
        main = {id(n) for n in model.graph.node}  # one set, not a graph walk per target
        branched = [n.name for n in targets if id(n) not in main]
        if branched:  # rewritten in place below: a MatMul inside an If branch would be missed, not quantized
            raise QuantizeError(f"weight MatMul {branched[0]!r} sits inside an If branch, which the per-row int8 "
                                "pass does not rewrite: keep it in fp32 with --keep-fp32, or report the model")
        new_inits = row_constants() if targets else []
        blocked = default_opset(model) >= 21
        if targets:
            ensure_contrib_opset(model)
        groups: dict[str, list[Any]] = {}  # activation -> the MatMuls reading it (Q, K and V share one)
        for node in targets:
            groups.setdefault(node.input[0], []).append(node)
        nodes = list(model.graph.node)
        bytes_before = bytes_after = 0
        for x, members in groups.items():
            hidden = int(inits[members[0].input[1]].dims[0])
            t = f"{x}.rowq"
            weights = [numpy_helper.to_array(inits[n.input[1]]) for n in members]
            quantized = [quantize_weight(w, self.weight_levels, self.per_channel) for w in weights]
            bytes_before += sum(w.nbytes for w in weights)
            bytes_after += sum(q.nbytes + sc.nbytes for q, sc in quantized)
            # One GEMM per MatMul: running Q, K and V as one GEMM and a Split measured faster at batch 1 but
            # 8% slower at b32 x 128 (the Split copies the whole output), so each keeps its own.
            body: list[Any] = []
            for node, (wq, w_scale) in zip(members, quantized):
                tag, w_name = node.name or node.output[0], node.input[1]
                if w_scale.size == 1:  # per tensor: MatMulIntegerToFloat takes a scalar or one scale per column
                    w_scale = w_scale.reshape(())
                new_inits += [numpy_helper.from_array(wq, f"{w_name}.rowq_w"),
                              numpy_helper.from_array(w_scale, f"{w_name}.rowq_ws")]
                body += [
                    helper.make_node("MatMulIntegerToFloat",
                                     [f"{t}.u8", f"{w_name}.rowq_w", "rowq.one", f"{w_name}.rowq_ws", "rowq.zero_point"],
                                     [f"{tag}.cols"], name=f"{tag}.rowq_mm", domain=MS_DOMAIN),
                    helper.make_node("Mul", [f"{tag}.cols", f"{t}.scale"], [node.output[0]], name=f"{tag}.rowq_rows"),
                ]
            # the activation's quantization goes where its first MatMul was; each MatMul's body after it
            at = nodes.index(members[0])
            nodes[at : at + 1] = row_quantize(x, t, hidden, blocked) + body
            for other in members[1:]:
                nodes.remove(other)
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        replaced = {n.input[1] for n in targets}
        still_used = used_names(model.graph)  # If branches read outer initializers too
        kept = [i for i in model.graph.initializer if i.name not in replaced or i.name in still_used]
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept + new_inits)
        return PassReport("rowwise-int8", {
            "matmuls": len(targets),
            "shared_inputs": len(targets) - len(groups),  # activations quantized once for Q/K/V
            "kept_fp32": len(self.keep),
            "weight_levels": self.weight_levels,
            "bytes_before": bytes_before,
            "bytes_after": bytes_after,
        })
