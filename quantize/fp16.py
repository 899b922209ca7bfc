"""FP16 graphs for CUDA, converted from the validated fp32 export.

Exporting in fp16 directly breaks the rotary fusion (transformers upcasts q to float), so the
conversion happens here. Kept in fp32: graph inputs/outputs, the rotary cos/sin tables (positions up
to 8192 times inverse frequencies lose too many bits in fp16) and the pooling / normalisation tail
outside the encoder and the head.

No fp32 islands inside the encoder (revision 2): LayerNormalization runs in fp16 (onnxruntime's CPU and
CUDA kernels accumulate its statistics in fp32 for fp16 tensors), and each fp32 table is cast to fp16
once, not once per consuming layer. Revision 1 kept LayerNorm in fp32: two Casts around each of the 44
LayerNorms of mmBERT plus one pair per layer for the rotary tables, ~220 extra kernels per call on a GPU,
and the Casts between Add and LayerNormalization kept onnxruntime from fusing them (SkipLayerNormalization).
"""

from __future__ import annotations

from typing import Any

from polyglot_onnx.errors import QuantizeError
from polyglot_onnx.graph_toolkit import iter_nodes, scopes
from polyglot_onnx.quantize.graphs import fused_counts

FP32_OPS = ["Softmax", "ReduceMean", "ReduceSum", "Pow", "Sqrt", "Cos", "Sin"]
# Top-level modules of the exported wrapper that run in fp16; everything else stays fp32.
FP16_MODULES = ("encoder", "transform")


def _keep_fp32(node: Any) -> bool:
    path = scopes(node)
    if not path:  # helper nodes the exporter emitted inside layers (Split, ...)
        return False
    if any("rotary" in part for part in path):
        return True
    return path[0] not in FP16_MODULES and node.op_type not in ("Gemm", "MatMul")


def _drop_duplicate_casts(model: Any) -> int:
    """float16.py inserts one Cast per (tensor, consuming node): keep one Cast per (input, target type) and
    point every consumer at it (a rotary table read by 22 layers is cast once, not 22 times)."""
    outputs = {o.name for o in model.graph.output}
    first: dict[tuple[Any, ...], str] = {}
    rename: dict[str, str] = {}
    keep = []
    for node in model.graph.node:
        if node.op_type == "Cast" and node.domain in ("", "ai.onnx") and node.output[0] not in outputs:
            to = next((a.i for a in node.attribute if a.name == "to"), None)
            key = (rename.get(node.input[0], node.input[0]), to)
            if key in first:
                rename[node.output[0]] = first[key]
                continue
            first[key] = node.output[0]
        keep.append(node)
    dropped = len(model.graph.node) - len(keep)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    for node in iter_nodes(model.graph):  # If branches read outer-scope names too
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    return dropped


def convert_fp16(model: Any) -> tuple[Any, dict[str, Any]]:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    before = fused_counts(model)
    blocked = [n.name for n in model.graph.node if _keep_fp32(n)]
    # The converter re-infers types to place Casts; the exporter's value_info can contradict that.
    del model.graph.value_info[:]
    out = convert_float_to_float16(model, keep_io_types=True, op_block_list=FP32_OPS, node_block_list=blocked)
    dropped = _drop_duplicate_casts(out)
    after = fused_counts(out)
    if after != before:
        raise QuantizeError(
            f"fp16 conversion changed the fused operators ({before} -> {after}): report this with the model name"
        )
    report = {
        "method": "float16 (keep_io_types), LayerNorm in fp16, one Cast per fp32 table",
        "fp32_ops": FP32_OPS,
        "fp32_nodes": len(blocked),
        "fused_ops": after,
        "duplicate_casts_merged": dropped,
        "casts": sum(1 for n in iter_nodes(out.graph) if n.op_type == "Cast"),
    }
    return out, report
