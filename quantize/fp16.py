"""FP16 graphs for CUDA, converted from the validated fp32 export.

Exporting in fp16 directly breaks the rotary fusion (transformers upcasts q to float), so the
conversion happens here. Kept in fp32: graph inputs/outputs, LayerNormalization, the rotary
cos/sin tables (positions up to 8192 times inverse frequencies lose too many bits in fp16) and the
pooling / normalisation tail outside the encoder and the head.
"""

from __future__ import annotations

from typing import Any

from polyglot_onnx.errors import QuantizeError
from polyglot_onnx.onnx_walk import scopes
from polyglot_onnx.quantize.graphs import fused_counts

FP32_OPS = ["LayerNormalization", "Softmax", "ReduceMean", "ReduceSum", "Pow", "Sqrt", "Cos", "Sin"]
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
    """float16.py inserts one Cast per (initializer, blocked consumer): merge repeats of one output."""
    seen: set[tuple[str, ...]] = set()
    keep = []
    for node in model.graph.node:
        key = tuple(node.output)
        if key in seen:
            continue
        seen.add(key)
        keep.append(node)
    dropped = len(model.graph.node) - len(keep)
    del model.graph.node[:]
    model.graph.node.extend(keep)
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
        "method": "float16 (keep_io_types)",
        "fp32_ops": FP32_OPS,
        "fp32_nodes": len(blocked),
        "fused_ops": after,
        "duplicate_casts_merged": dropped,
    }
    return out, report
