"""ONNX helpers only the quantize stage needs (fused-op counts, layer outputs, probes, loading); the walks,
scopes and histogram they build on are polyglot_onnx/graph_toolkit.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from polyglot_onnx.graph_toolkit import layer_index, op_histogram

# Operators whose count must not change when a variant is built from the fp32 graph.
FUSED_OPS = ("Attention", "RotaryEmbedding")


def fused_counts(model: Any) -> dict[str, int]:
    counts = op_histogram(model)
    return {op: counts[op] for op in FUSED_OPS if counts.get(op)}


def layer_outputs(model: Any) -> list[str]:
    """One tensor per encoder layer: the last value a layer hands to the rest of the graph.

    Found from the exporter's module scopes, so it works for any architecture in the strategy
    table; names survive quantization and fp16 conversion, which keep non-MatMul outputs.
    """
    produced_in: dict[str, tuple[int, int]] = {}  # tensor -> (layer, producer position)
    for pos, node in enumerate(model.graph.node):
        index = layer_index(node)
        if index is not None:
            for out in node.output:
                produced_in[out] = (index, pos)
    crossing: dict[str, tuple[int, int]] = {}
    for node in model.graph.node:
        here = layer_index(node)
        for name in node.input:
            src = produced_in.get(name)
            if src is not None and src[0] != here:
                crossing[name] = src
    for out in model.graph.output:
        if out.name in produced_in:
            crossing[out.name] = produced_in[out.name]
    last: dict[int, tuple[int, str]] = {}  # the latest-produced crossing tensor of each layer
    for name, (layer, pos) in crossing.items():
        if layer not in last or pos > last[layer][0]:
            last[layer] = (pos, name)
    return [last[i][1] for i in sorted(last)]


def expose(model: Any, names: list[str], prefix: str = "probe_") -> list[str]:
    """Add float32 graph outputs for internal tensors (cast, since fp16 graphs hold fp16 values)."""
    from onnx import TensorProto, helper

    added = []
    for i, name in enumerate(names):
        out = f"{prefix}{i}"
        model.graph.node.append(helper.make_node("Cast", [name], [out], to=TensorProto.FLOAT, name=f"{out}_cast"))
        model.graph.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, None))
        added.append(out)
    return added


def load_model(path: Path) -> Any:
    import onnx

    return onnx.load(str(path), load_external_data=True)

