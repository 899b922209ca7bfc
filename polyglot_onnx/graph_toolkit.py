"""The one ONNX graph toolkit export and quantize share: subgraph-aware walks, the scope reader, the op histogram,
and the pass protocol (needs onnx protos only; nothing here imports onnx itself).

A pass that looks only at ``graph.node`` misses what runs inside an ``If`` (the length dispatch of a banded
ModernBERT export puts every layer's attention in one): it would count fused operators short, or think a tensor
or initializer that only a branch reads is unused and delete it. So every walk here descends into subgraphs,
and a pass that rewrites nodes in place says so when a node it must rewrite lives in a branch.

Modelled on onnxruntime's ``fusion_base.Fusion`` over its ``OnnxModel``: each graph pass is a small class with
one job whose ``apply(model)`` returns one :class:`PassReport` (what it changed, as counts), so tests assert
the counts and the manifest records them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

SCOPE_KEY = "pkg.torch.onnx.name_scopes"  # where torch.onnx (dynamo) records each node's module path
# the encoder layer's own scope: 'bert.encoder.layer.3' (BERT), 'model.layers.3' (ModernBERT)
LAYER_SCOPE = re.compile(r"(?:^|\.)layers?\.(\d+)$")
DEFAULT_DOMAINS = ("", "ai.onnx")
MS_DOMAIN = "com.microsoft"  # onnxruntime's contrib operators


@dataclass
class PassReport:
    """What one graph pass did: its name and its counts (plain JSON values, recorded in the manifest)."""

    name: str
    counts: dict[str, Any] = field(default_factory=dict)


class GraphPass(Protocol):
    """A graph pass: rewrites (or checks) ``model`` in place and reports what it did."""

    def apply(self, model: Any) -> PassReport: ...


def scopes(node: Any) -> list[str]:
    """The torch module path the exporter recorded for a node ('' entries dropped); [] if none."""
    for prop in node.metadata_props:
        if prop.key == SCOPE_KEY:
            return [s.strip(" '\"") for s in prop.value.strip("[]").split(",") if s.strip(" '\"")]
    return []


def scope_number(node: Any, pattern: re.Pattern[str]) -> int | None:
    """The number ``pattern``'s first group reads from the first of the node's scopes it matches, or None
    (which layer a node was traced in, which layer's attention route...)."""
    for scope in scopes(node):
        found = pattern.search(scope)
        if found:
            return int(found.group(1))
    return None


def layer_index(node: Any) -> int | None:
    """The encoder layer a node was traced in, from the exporter's name scopes; None outside the layers."""
    return scope_number(node, LAYER_SCOPE)


def op_name(node: Any) -> str:
    """The histogram key of a node: its op_type, prefixed with its domain when that is not ai.onnx."""
    return node.op_type if node.domain in DEFAULT_DOMAINS else f"{node.domain}.{node.op_type}"


def op_histogram(model: Any) -> Counter[str]:
    """Operators of the graph and of its subgraphs, keyed by :func:`op_name`."""
    return Counter(op_name(n) for n in iter_nodes(model.graph))


def subgraphs(node: Any) -> Iterator[Any]:
    for attr in node.attribute:
        if attr.g.ByteSize():
            yield attr.g
        yield from attr.graphs


def iter_nodes(graph: Any) -> Iterator[Any]:
    """Every node of ``graph`` and, depth first, of the subgraphs its nodes hold."""
    for node in graph.node:
        yield node
        for sub in subgraphs(node):
            yield from iter_nodes(sub)


def in_subgraph(graph: Any, node: Any) -> bool:
    """Whether ``node`` lives in a branch of ``graph`` rather than in ``graph.node`` itself."""
    return all(n is not node for n in graph.node) and any(n is node for n in iter_nodes(graph))


def used_names(graph: Any) -> set[str]:
    """Every tensor name some node reads, in ``graph`` or in any subgraph (outer-scope references included)."""
    return {name for node in iter_nodes(graph) for name in node.input if name}


def initializers(model: Any) -> dict[str, Any]:
    """The main graph's initializers by name (branches read them as outer-scope names)."""
    return {init.name: init for init in model.graph.initializer}


def consumers(model: Any) -> dict[str, list[Any]]:
    """Tensor name -> every node reading it, branches included."""
    out: dict[str, list[Any]] = {}
    for node in iter_nodes(model.graph):
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def weight_matmuls(model: Any) -> list[Any]:
    """MatMul nodes, branches included, whose second input is a 2-D float initializer: what int8 quantizes."""
    from onnx import TensorProto

    inits = initializers(model)
    found = []
    for node in iter_nodes(model.graph):
        if node.op_type != "MatMul" or node.domain not in DEFAULT_DOMAINS or len(node.input) < 2:
            continue
        init = inits.get(node.input[1])
        if init is not None and len(init.dims) == 2 and init.data_type == TensorProto.FLOAT:
            found.append(node)
    return found


def default_opset(model: Any) -> int:
    """The model's ai.onnx opset version (0 when it declares none)."""
    return next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), 0)


def ensure_contrib_opset(model: Any) -> None:
    """Declares onnxruntime's com.microsoft domain, once, for a pass that adds contrib operators."""
    from onnx import helper

    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
