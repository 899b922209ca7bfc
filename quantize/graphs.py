"""Small ONNX helpers the quantization passes share: scopes, consumers, initializers, saving."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from polyglot_onnx.onnx_walk import iter_nodes, scope_number

# Operators whose count must not change when a variant is built from the fp32 graph.
FUSED_OPS = ("Attention", "RotaryEmbedding")
_LAYER = re.compile(r"\.layers?\.(\d+)$")


def op_histogram(model: Any) -> Counter[str]:
    """Operators of the graph and its subgraphs (a length-dispatched export keeps Attention inside If)."""
    return Counter(n.op_type for n in iter_nodes(model.graph))


def fused_counts(model: Any) -> dict[str, int]:
    counts = op_histogram(model)
    return {op: counts[op] for op in FUSED_OPS if counts.get(op)}


def layer_index(node: Any) -> int | None:
    """Encoder layer a node belongs to (``encoder.encoder.layer.3`` / ``encoder.layers.3`` -> 3)."""
    return scope_number(node, _LAYER)


def initializers(model: Any) -> dict[str, Any]:
    return {init.name: init for init in model.graph.initializer}


def consumers(model: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def weight_matmuls(model: Any) -> list[Any]:
    """MatMul nodes whose second input is a 2-D float initializer: what dynamic int8 can quantize."""
    from onnx import TensorProto

    inits = initializers(model)
    found = []
    for node in model.graph.node:
        if node.op_type != "MatMul" or len(node.input) < 2:
            continue
        init = inits.get(node.input[1])
        if init is not None and len(init.dims) == 2 and init.data_type == TensorProto.FLOAT:
            found.append(node)
    return found


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

