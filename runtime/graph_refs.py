"""The files an ONNX graph would make onnxruntime open, read from the protobuf wire format.

A graph names its external data by ``location`` strings inside TensorProto.external_data, and
onnxruntime opens them relative to the graph. The runtime must check them before onnxruntime sees
the file, and it may not import onnx, so the few messages that can hold a tensor are walked here by
field number (onnx.proto: Model, Graph, Node, Attribute, Function, TrainingInfo, SparseTensor,
Tensor). Parsing is real protobuf decoding (any field order, repeated fields, long varints), so the
check cannot be dodged by re-encoding. Bulk bytes (raw_data) are skipped through an mmap, never
copied: scanning a 1 GB graph touches only its structure.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from polyglot_onnx.errors import PackageError

# message -> {field number: message it holds}, only along the paths that can reach a TensorProto.
SCHEMA: dict[str, dict[int, str]] = {
    "Model": {7: "Graph", 20: "TrainingInfo", 25: "Function"},
    "Graph": {1: "Node", 5: "Tensor", 15: "SparseTensor"},
    "Node": {5: "Attribute"},
    "Function": {7: "Node", 11: "Attribute"},
    "Attribute": {5: "Tensor", 6: "Graph", 10: "Tensor", 11: "Graph", 22: "SparseTensor", 23: "SparseTensor"},
    "SparseTensor": {1: "Tensor", 2: "Tensor"},
    "TrainingInfo": {1: "Graph", 2: "Graph"},
    "Tensor": {13: "Entry"},  # external_data: StringStringEntryProto {key = 1, value = 2}
}
NODE_OP_TYPE = 4
# Operators whose attributes name files for an execution provider to open (EP context caches).
FILE_OPENING_OPS = frozenset({b"EPContext"})


class _Malformed(Exception):
    pass


@dataclass
class GraphRefs:
    """What a graph asks onnxruntime to open besides itself."""

    locations: list[str] = field(default_factory=list)
    file_ops: set[str] = field(default_factory=set)


def _varint(buf: mmap.mmap | bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: mmap.mmap | bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(field number, start, end) of each length-delimited field; other wire types are skipped."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise _Malformed("field runs past its message")
            yield number, pos, pos + length
            pos += length
        else:
            raise _Malformed(f"wire type {wire}")
        if pos > end:
            raise _Malformed("field runs past its message")


def scan(buf: mmap.mmap | bytes) -> GraphRefs:
    """Walk a serialized ModelProto; iterative, so nesting depth costs no Python recursion."""
    refs = GraphRefs()
    stack = [("Model", 0, len(buf))]
    while stack:
        kind, start, end = stack.pop()
        if kind == "Entry":
            keys, values = [], []
            for number, a, b in _fields(buf, start, end):
                if number == 1:
                    keys.append(bytes(buf[a:b]))
                elif number == 2:
                    values.append(bytes(buf[a:b]))
            if b"location" in keys:  # checked whatever else the entry holds: never under-report
                refs.locations.extend(v.decode("utf-8", "surrogateescape") for v in values)
            continue
        children = SCHEMA[kind]
        for number, a, b in _fields(buf, start, end):
            if kind == "Node" and number == NODE_OP_TYPE and bytes(buf[a:b]) in FILE_OPENING_OPS:
                refs.file_ops.add(bytes(buf[a:b]).decode())
            if number in children:
                stack.append((children[number], a, b))
    return refs


def graph_refs(path: Path, label: str) -> GraphRefs:
    """The external-data locations and file-opening operators of the graph at ``path``."""
    try:
        with open(path, "rb") as fh:
            if fh.seek(0, 2) == 0:
                raise PackageError(f"package file {label} is empty: re-export or re-download the package")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return scan(buf)
    except _Malformed as err:
        raise PackageError(f"package file {label} is not a valid ONNX graph ({err}): re-export the package") from err
    except OSError as err:
        raise PackageError(
            f"package file {label} cannot be read ({err.strerror or type(err).__name__}): check its permissions"
        ) from err
