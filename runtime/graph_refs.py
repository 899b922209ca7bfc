"""The files an ONNX graph would make onnxruntime open, read from the protobuf wire format.

A graph names its external data by ``location`` strings inside TensorProto.external_data, and
onnxruntime opens them relative to the graph. The runtime must check them before onnxruntime sees
the file, and it may not import onnx, so the few messages that can hold a tensor are walked here by
field number (onnx.proto: Model, Graph, Node, Attribute, Function, TrainingInfo, SparseTensor,
Tensor).

This reader and onnxruntime's protobuf (C++) must see the same fields, or a graph could hide a
tensor from one of them (issue 25: a tag written as the 5-byte varint 2**32+58 is field 7 to
protobuf, which keeps the low 32 bits, and was an unknown field here). So anything the exporter
never writes and protobuf might read differently is refused rather than interpreted: a tag that is
not the shortest varint of a 32-bit value, field number 0, group wire types, a length over 5 bytes
or past protobuf's 2 GB limit, a singular message field written twice (protobuf merges the copies),
nesting deeper than protobuf's recursion limit. What remains has one reading.

Cost: one pass, linear in the bytes of the walked messages, memory bounded by the nesting depth
(one generator per open message); bulk bytes (raw_data) are skipped through an mmap, never copied,
so scanning a 1 GB graph touches only its structure. The walk stops at the first thing it refuses.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from polyglot_onnx.errors import PackageError

Buffer = mmap.mmap | bytes

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
# Singular (non-repeated) length-delimited fields on those paths: protobuf merges repeated copies
# (so 8M copies of an empty ModelProto.graph are one valid graph); the exporter writes each once.
SINGULAR: dict[str, frozenset[int]] = {
    "Model": frozenset({7}),
    "Node": frozenset({4}),
    "Attribute": frozenset({5, 6, 22}),
    "SparseTensor": frozenset({1, 2}),
    "TrainingInfo": frozenset({1, 2}),
}
NODE_OP_TYPE = 4
ENTRY_KEY, ENTRY_VALUE = 1, 2
LOCATION = b"location"
# Operators whose attributes name files for an execution provider to open (EP context caches).
FILE_OPENING_OPS = frozenset({b"EPContext"})
MAX_DEPTH = 100  # protobuf's default recursion limit: onnxruntime refuses deeper graphs as well
MAX_LENGTH = 2**31 - 1 - 16  # protobuf's ReadSize refuses longer fields (INT_MAX less its slop bytes)
MAX_LOCATION_BYTES = 4096  # Linux PATH_MAX: a longer location cannot be opened anyway
MAX_LOCATIONS = 10_000  # distinct external-data files; each must be listed in manifest.json too
# Fields walked in all: an exported graph has about 15 per node, so this is over 250,000 nodes (the
# largest encoders have about 10,000); it keeps a hostile graph of 2-byte fields to about a second.
MAX_FIELDS = 4_000_000
_FLUSH = 1 << 16  # each field iterator reports its count to the budget this often


class _Malformed(Exception):
    pass


class _Budget:
    """Fields left to walk, shared by every open message."""

    def __init__(self, fields: int) -> None:
        self.limit = self.left = fields

    def spend(self, fields: int) -> None:
        self.left -= fields
        if self.left < 0:
            raise _Malformed(
                f"it has more than {self.limit} protobuf fields where tensors can be, far more than "
                "any exported encoder"
            )


@dataclass
class GraphRefs:
    """What a graph asks onnxruntime to open besides itself: distinct locations, first seen first."""

    locations: list[str] = field(default_factory=list)
    file_ops: set[str] = field(default_factory=set)


def _tag(buf: Buffer, pos: int, end: int) -> tuple[int, int]:
    """A multi-byte tag, only in canonical form: protobuf truncates over-long tags to 32 bits, which
    would make its field number differ from the one read here."""
    start, result, shift = pos, 0, 0
    while True:
        if pos >= end or pos - start == 5:
            raise _Malformed(f"field tag at byte {start} is over 5 bytes or cut off")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    if byte == 0 or result >= 1 << 32:
        raise _Malformed(f"field tag at byte {start} is not in canonical protobuf form")
    return result, pos


def _varint(buf: Buffer, pos: int, end: int, max_bytes: int) -> tuple[int, int]:
    """A length (protobuf reads at most 5 bytes) or a skipped integer value (at most 10)."""
    start, result, shift = pos, 0, 0
    while True:
        if pos >= end or pos - start == max_bytes:
            raise _Malformed(f"varint at byte {start} is over {max_bytes} bytes or cut off")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: Buffer, pos: int, end: int, budget: _Budget) -> Iterator[tuple[int, int, int]]:
    """(field number, start, end) of each length-delimited field of one message; other wire types
    are skipped. Single-byte tags and lengths (nearly all of a graph's) take the short path."""
    count = 0
    while pos < end:
        count += 1
        if count == _FLUSH:
            budget.spend(count)
            count = 0
        tag = buf[pos]
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = _tag(buf, pos, end)
        wire = tag & 7
        if tag < 8:
            raise _Malformed(f"field number 0 before byte {pos}")
        if wire == 2:
            if pos >= end:
                raise _Malformed("field runs past its message")
            length = buf[pos]
            if length < 0x80:
                pos += 1
            else:
                length, pos = _varint(buf, pos, end, 5)
                if length > MAX_LENGTH:
                    raise _Malformed(f"field length {length} is over protobuf's 2 GB limit")
            start, pos = pos, pos + length
            if pos > end:
                raise _Malformed("field runs past its message")
            yield tag >> 3, start, pos
        elif wire == 0:
            _, pos = _varint(buf, pos, end, 10)
        elif wire == 1 or wire == 5:
            pos += 8 if wire == 1 else 4
            if pos > end:
                raise _Malformed("field runs past its message")
        else:  # groups (3, 4) and the unused 6, 7: never in a graph the exporter writes
            raise _Malformed(f"wire type {wire} before byte {pos}")
    budget.spend(count)


def _entry(buf: Buffer, start: int, end: int, refs: GraphRefs, seen: set[str], budget: _Budget) -> None:
    """One external_data entry: its value is a location whenever a key says so (never under-report)."""
    is_location: bool | None = None
    value: tuple[int, int] | None = None
    for number, a, b in _fields(buf, start, end, budget):
        if number in (ENTRY_KEY, ENTRY_VALUE):
            if (is_location if number == ENTRY_KEY else value) is not None:
                raise _Malformed("an external_data entry repeats its key or value, of which protobuf keeps the last")
            if number == ENTRY_KEY:
                is_location = b - a == len(LOCATION) and buf[a:b] == LOCATION
            else:
                value = (a, b)
    if not is_location or value is None:
        return
    a, b = value
    if b - a > MAX_LOCATION_BYTES:
        raise _Malformed(f"an external-data location is longer than {MAX_LOCATION_BYTES} bytes")
    location = bytes(buf[a:b]).decode("utf-8", "surrogateescape")
    if location not in seen:
        if len(seen) == MAX_LOCATIONS:
            raise _Malformed(f"the graph names more than {MAX_LOCATIONS} external-data files")
        seen.add(location)
        refs.locations.append(location)


def scan(buf: Buffer) -> GraphRefs:
    """Walk a serialized ModelProto depth first; a stack of field iterators, so neither Python
    recursion nor the number of sibling messages costs memory."""
    refs, seen_locations, budget = GraphRefs(), set[str](), _Budget(MAX_FIELDS)
    stack: list[tuple[str, Iterator[tuple[int, int, int]], set[int]]] = [
        ("Model", _fields(buf, 0, len(buf), budget), set())
    ]
    while stack:
        kind, fields, seen = stack[-1]
        children, singular = SCHEMA[kind], SINGULAR.get(kind, frozenset())
        for number, a, b in fields:
            if number in singular:
                if number in seen:
                    raise _Malformed(f"a {kind}Proto holds its field {number} twice, which protobuf would merge")
                seen.add(number)
            if kind == "Node" and number == NODE_OP_TYPE and b - a < 64 and buf[a:b] in FILE_OPENING_OPS:
                refs.file_ops.add(bytes(buf[a:b]).decode())
            child = children.get(number)
            if child is None or a == b:  # an empty message holds nothing to open
                continue
            if child == "Entry":
                _entry(buf, a, b, refs, seen_locations, budget)
                continue
            if len(stack) == MAX_DEPTH:
                raise _Malformed(f"messages nest deeper than protobuf's limit of {MAX_DEPTH}")
            stack.append((child, _fields(buf, a, b, budget), set()))
            break
        else:
            stack.pop()
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
