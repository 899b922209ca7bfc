"""Walking an ONNX graph with its subgraphs (If branches); shared by export and quantize (needs onnx protos only).

A pass that looks only at ``graph.node`` misses what runs inside an ``If``: it would count fused operators
short, or think a tensor or initializer that only a branch reads is unused and delete it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

SCOPE_KEY = "pkg.torch.onnx.name_scopes"  # where torch.onnx (dynamo) records each node's module path


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


def used_names(graph: Any) -> set[str]:
    """Every tensor name some node reads, in ``graph`` or in any subgraph (outer-scope references included)."""
    return {name for node in iter_nodes(graph) for name in node.input if name}
