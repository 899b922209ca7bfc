"""Length dispatch: sequences up to a few local windows run plain dense attention, longer ones the banded route.

The banded local layers (export/banded.py) and query-chunked global layers (export/chunked.py) bound memory
and work at thousands of tokens, but at 32-128 tokens their fixed costs dominate: blocks padded to 64
queries x 192 keys, key / value window copies, eight small Attention calls per global layer (onnxruntime's
profile at 32 tokens, mmBERT-base int8: 78 Attention calls take 14.6 ms against 2.3 ms for the dense graph's
22). This pass gives every layer an ONNX ``If`` on the sequence length: the then-branch is one Attention
node over every key under a [b, 1, L, L] mask (band and padding for local layers, padding for global ones),
the else-branch is the traced banded / chunked nodes, moved unchanged. Both branches are exact (the export
validates the graph against PyTorch at lengths on both sides of the limit); the masks are built once, in
their own ``If``, only for short inputs. The weights are untouched: one graph, one copy.

The traced nodes of each layer's route are found by the name scope export/banded.py gives them
('<layer>.attn.route'), not by pattern matching: a route node another layer also reads (a mask shared
by tracing) stays in the main graph.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from polyglot_onnx.errors import ExportError
from polyglot_onnx.export.banded import ROUTE
from polyglot_onnx.graph_toolkit import PassReport, layer_index, scope_number, used_names

PREFIX = "dispatch"
LOCAL_MASK, GLOBAL_MASK, SHORT = f"{PREFIX}.local_mask", f"{PREFIX}.global_mask", f"{PREFIX}.short"
_ROUTE_SCOPE = re.compile(rf"\blayers?\.(\d+)\.attn\.{ROUTE}$")


def route_layer(node: Any) -> int | None:
    """The layer whose banded / chunked route traced ``node``, or None."""
    return scope_number(node, _ROUTE_SCOPE)


@dataclass(frozen=True)
class Route:
    """One layer's traced route: nodes to move into the else-branch, its inputs and its one output."""

    layer: int
    moved: list[Any]
    output: str
    query: str
    key: str
    value: str
    attention: Any  # one of the route's Attention nodes: its attributes and scope are copied


class LengthDispatch:
    """Give each routed layer of a banded export an ``If`` (sequence length <= ``dense_up_to``) -> dense."""

    def __init__(self, dense_up_to: int, half_window: int, kinds: list[str]) -> None:
        self.dense_up_to = dense_up_to
        self.half_window = half_window
        self.kinds = kinds

    def apply(self, model: Any) -> PassReport:
        graph = model.graph
        layers = sorted({i for n in graph.node if (i := route_layer(n)) is not None})
        if not layers:
            raise ExportError("length dispatch found no routed attention layers: export with banded attention")
        routes = [self._route(graph, i) for i in layers]
        value_info = {v.name: v for v in graph.value_info}
        moved_ids = {id(n) for r in routes for n in r.moved}
        ifs = {id(r.moved[-1]): self._if_node(r, value_info) for r in routes}
        nodes = self._mask_nodes()
        for node in graph.node:
            if id(node) in ifs:
                nodes.append(ifs[id(node)])
            elif id(node) not in moved_ids:
                nodes.append(node)
        moved_outputs = {o for r in routes for n in r.moved for o in n.output}
        kept_info = [v for v in graph.value_info if v.name not in moved_outputs]
        del graph.value_info[:]
        graph.value_info.extend(kept_info)
        del graph.node[:]
        graph.node.extend(nodes)
        return PassReport("length-dispatch", {"layers": len(routes), "dense_up_to": self.dense_up_to,
                                              "moved_nodes": len(moved_ids)})

    def _route(self, graph: Any, layer: int) -> Route:
        nodes = list(graph.node)
        region = [n for n in nodes if route_layer(n) == layer]
        inside = {id(n) for n in region}
        produced = {o: n for n in region for o in n.output}
        outside = [n for n in nodes if id(n) not in inside]
        read_outside = used_names(_Graph(outside)) | {o.name for o in graph.output}
        exported = {t for t in produced if t in read_outside}
        # the route's result: the tensor computed from its Attention nodes that the rest of the graph reads (the
        # layer reshapes it into Wo). Anything else leaving the region (a shape value tracing shared with the
        # layer, a mask another layer reuses: torch releases merge these differently) stays in the main graph.
        results = [t for t in exported if _reaches(produced[t], produced, "Attention")]
        if len(results) != 1:
            raise ExportError(f"length dispatch: layer {layer}'s attention route has {len(results)} outputs, 1 expected")
        output = results[0]
        keep = _ancestors_within([produced[t] for t in exported if t != output], produced)
        if id(produced[output]) in keep:
            raise ExportError(f"length dispatch: layer {layer}'s attention result is shared with another layer")
        moved = [n for n in region if id(n) not in keep]
        reads = {i for n in moved for i in n.input if i and i not in produced}
        producers = {o: n for n in nodes for o in n.output}
        rotary = [t for t in _in_order(reads, nodes) if producers.get(t) is not None and producers[t].op_type ==
                  "RotaryEmbedding"]
        values = [t for t in reads if t in producers and producers[t].op_type == "Transpose" and
                  layer_index(producers[t]) == layer and route_layer(producers[t]) is None]
        attention = next((n for n in moved if n.op_type == "Attention"), None)
        if len(rotary) != 2 or len(values) != 1 or attention is None:
            raise ExportError(f"length dispatch: layer {layer}'s route reads {len(rotary)} rotary outputs and "
                              f"{len(values)} value tensors (2 and 1 expected)")
        return Route(layer, moved, output, rotary[0], rotary[1], values[0], attention)

    def _if_node(self, route: Route, value_info: dict[str, Any]) -> Any:
        from onnx import TensorProto, helper

        elem = value_info[route.output].type.tensor_type.elem_type if route.output in value_info else TensorProto.FLOAT
        kind = self.kinds[route.layer]
        mask = LOCAL_MASK if kind == "local" else GLOBAL_MASK
        tag = f"{PREFIX}.layers.{route.layer}"
        dense = helper.make_node("Attention", [route.query, route.key, route.value, mask], [f"{tag}.dense_heads"],
                                 name=f"{tag}.dense_attention")
        dense.attribute.extend(route.attention.attribute)
        dense.metadata_props.extend(route.attention.metadata_props)
        then_nodes = [dense, helper.make_node("Transpose", [f"{tag}.dense_heads"], [f"{tag}.dense"],
                                              name=f"{tag}.dense_transpose", perm=[0, 2, 1, 3])]
        then_branch = helper.make_graph(then_nodes, f"{tag}.dense", [],
                                        [helper.make_tensor_value_info(f"{tag}.dense", elem, None)])
        banded_out = f"{route.output}.{ROUTE}"
        else_nodes = []
        for node in route.moved:
            for i, name in enumerate(node.output):
                if name == route.output:
                    node.output[i] = banded_out
            else_nodes.append(node)
        infos = [value_info[o] for n in route.moved for o in n.output if o in value_info]
        else_branch = helper.make_graph(else_nodes, f"{tag}.{ROUTE}", [],
                                        [helper.make_tensor_value_info(banded_out, elem, None)], value_info=infos)
        node = helper.make_node("If", [SHORT], [route.output], name=f"{tag}.if", then_branch=then_branch,
                                else_branch=else_branch)
        node.metadata_props.extend(route.attention.metadata_props)
        return node

    def _mask_nodes(self) -> list[Any]:
        """SHORT, and both [b, 1, L, L] bool masks built only when SHORT (an empty mask otherwise)."""
        import numpy as np
        from onnx import TensorProto, helper, numpy_helper

        def const(name: str, value: Any) -> Any:
            return helper.make_node("Constant", [], [name], name=name, value=numpy_helper.from_array(value, name))

        p = PREFIX
        build = [
            const(f"{p}.zero", np.array(0, np.int64)),
            const(f"{p}.one", np.array(1, np.int64)),
            const(f"{p}.half_window", np.array(self.half_window, np.int64)),
            const(f"{p}.axes_rows", np.array([1], np.int64)),
            const(f"{p}.axes_cols", np.array([0], np.int64)),
            const(f"{p}.axes_key", np.array([1, 2], np.int64)),
            helper.make_node("Range", [f"{p}.zero", f"{p}.length", f"{p}.one"], [f"{p}.pos"], name=f"{p}.pos"),
            helper.make_node("Unsqueeze", [f"{p}.pos", f"{p}.axes_rows"], [f"{p}.rows"], name=f"{p}.rows"),
            helper.make_node("Unsqueeze", [f"{p}.pos", f"{p}.axes_cols"], [f"{p}.cols"], name=f"{p}.cols"),
            helper.make_node("Sub", [f"{p}.rows", f"{p}.cols"], [f"{p}.distance"], name=f"{p}.distance"),
            helper.make_node("Abs", [f"{p}.distance"], [f"{p}.abs"], name=f"{p}.abs"),
            helper.make_node("LessOrEqual", [f"{p}.abs", f"{p}.half_window"], [f"{p}.band"], name=f"{p}.band"),
            helper.make_node("Equal", [f"{p}.distance", f"{p}.zero"], [f"{p}.itself"], name=f"{p}.itself"),
            helper.make_node("Cast", ["attention_mask"], [f"{p}.valid_keys"], name=f"{p}.valid_keys",
                             to=TensorProto.BOOL),
            helper.make_node("Unsqueeze", [f"{p}.valid_keys", f"{p}.axes_key"], [f"{p}.valid"], name=f"{p}.valid"),
            helper.make_node("And", [f"{p}.band", f"{p}.valid"], [f"{p}.banded"], name=f"{p}.banded"),
            # a query always sees itself: a padded query far from every valid key would otherwise get NaN
            helper.make_node("Or", [f"{p}.banded", f"{p}.itself"], [f"{p}.local"], name=f"{p}.local"),
            helper.make_node("Or", [f"{p}.valid", f"{p}.itself"], [f"{p}.global"], name=f"{p}.global"),
        ]
        bool_out = [helper.make_tensor_value_info(f"{p}.local", TensorProto.BOOL, None),
                    helper.make_tensor_value_info(f"{p}.global", TensorProto.BOOL, None)]
        empty = [const(f"{p}.local_empty", np.zeros((1, 1, 1, 1), bool)),
                 const(f"{p}.global_empty", np.zeros((1, 1, 1, 1), bool))]
        empty_out = [helper.make_tensor_value_info(f"{p}.local_empty", TensorProto.BOOL, None),
                     helper.make_tensor_value_info(f"{p}.global_empty", TensorProto.BOOL, None)]
        return [
            helper.make_node("Shape", ["input_ids"], [f"{p}.length_1d"], name=f"{p}.length_1d", start=1, end=2),
            helper.make_node("Squeeze", [f"{p}.length_1d"], [f"{p}.length"], name=f"{p}.length"),
            const(f"{p}.limit", np.array(self.dense_up_to, np.int64)),
            helper.make_node("LessOrEqual", [f"{p}.length", f"{p}.limit"], [SHORT], name=SHORT),
            helper.make_node("If", [SHORT], [LOCAL_MASK, GLOBAL_MASK], name=f"{p}.masks",
                             then_branch=helper.make_graph(build, f"{p}.build_masks", [], bool_out),
                             else_branch=helper.make_graph(empty, f"{p}.no_masks", [], empty_out)),
        ]


@dataclass(frozen=True)
class _Graph:
    """Just enough of a GraphProto for used_names over a node list."""

    node: list[Any]


def _ancestors_within(start: list[Any], produced: dict[str, Any]) -> set[int]:
    """ids of ``start`` and of every node of the region they depend on (they must stay in the main graph)."""
    seen: set[int] = set()
    stack = list(start)
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(produced[i] for i in node.input if i in produced)
    return seen


_SHAPE_ONLY = ("Shape", "Size")


def _reaches(node: Any, produced: dict[str, Any], op_type: str) -> bool:
    """Whether ``node`` is, or depends within the region on, a node of ``op_type`` through tensor values:
    a Shape / Size reads only its input's dimensions, so what is computed from it (torch 2.11 takes a reshape's
    size from the attention output) does not carry the attention's values."""
    seen: set[int] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        if current.op_type == op_type:
            return True
        seen.add(id(current))
        if current.op_type not in _SHAPE_ONLY:
            stack.extend(produced[i] for i in current.input if i in produced)
    return False


def _in_order(names: set[str], nodes: list[Any]) -> list[str]:
    """``names`` ordered by where their producers sit in the graph."""
    order = {o: k for k, n in enumerate(nodes) for o in n.output}
    return sorted((t for t in names if t in order), key=order.__getitem__)
