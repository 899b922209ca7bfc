"""Hostile packages (issue 25): one reading of a graph, bounded scan cost, sizes before reads, typed errors.

The one-line refusals of whole packages are rows of test_trust.py's corrupt-package table; this module
holds what a row cannot say: that onnxruntime really reads what the pre-scan refuses, what a refusal
costs in time and memory, that nothing is hashed or read before it, and the canary and load() edges.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import tracemalloc
from pathlib import Path

import pytest
from corrupt_packages import (
    canary_header,
    duplicate_entries,
    hardlinked_alias,
    huge_tokenizer,
    no_canary_texts,
    overlong_graph_tag,
    tensor_shape,
    varint,
)

from polyglot_onnx import Embedder, FillMask
from polyglot_onnx.errors import InputError, PackageError
from polyglot_onnx.package_files import PackageFile, read_file
from polyglot_onnx.runtime import graph_refs as gr


@pytest.fixture()
def bert_copy(tiny_models, tmp_path) -> Path:
    dst = tmp_path / "pkg"
    shutil.copytree(tiny_models["tiny-bert"].package, dst)
    return dst


def field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


# ---- one reading of the graph ----------------------------------------------------------------------


def test_overlong_tag_is_read_by_onnxruntime_and_refused_here(bert_copy):
    """The divergence is real: onnxruntime builds a session from the re-encoded graph (reading the unlisted
    weights.bin); the loader refuses it before onnxruntime sees it, with verify on or off."""
    import onnxruntime as ort

    overlong_graph_tag(bert_copy)
    session = ort.InferenceSession(str(bert_copy / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_outputs()[0].name == "token_embeddings"
    for verify in (True, False):
        with pytest.raises(PackageError, match=r"field tag at byte \d+ is not in canonical protobuf form"):
            Embedder.load(bert_copy, provider="cpu", verify=verify)


GRAPH_WITH_LOCATION = field(7, field(5, field(13, field(1, b"location") + field(2, b"w.bin"))))


@pytest.mark.parametrize(
    "data, fragment",
    [
        (varint(2**32 + 58) + varint(0), "is not in canonical protobuf form"),  # field 7 to protobuf
        (b"\xba\x00" + varint(0), "is not in canonical protobuf form"),  # field 7 in two bytes
        (b"\xba\x80\x80\x80\x80\x00\x00", "is over 5 bytes"),  # older protobuf would still read field 7
        (b"\x02\x00", "field number 0"),
        (b"\x0b\x0c", "wire type 3"),  # a group: skipped by protobuf with what it holds
        (b"\x3a\x80\x80\x80\x80\x80\x00", "varint at byte 1 is over 5 bytes"),  # protobuf reads 5 length bytes
        (field(7, b"") + field(7, b""), "ModelProto holds its field 7 twice"),  # protobuf merges the copies
        (field(7, field(5, field(13, field(1, b"location") + field(1, b"x")))), "repeats its key or value"),
        (field(7, field(5, field(13, field(1, b"location") + field(2, b"a" * 5000)))), "longer than 4096 bytes"),
    ],
    ids=["tag-over-32-bits", "tag-not-shortest", "tag-over-5-bytes", "field-0", "group", "length-over-5-bytes",
         "singular-twice", "entry-key-twice", "long-location"],
)
def test_scan_refuses_what_protobuf_could_read_otherwise(tmp_path, data, fragment):
    (tmp_path / "g.onnx").write_bytes(data)
    with pytest.raises(PackageError, match="is not a valid ONNX graph") as info:
        gr.graph_refs(tmp_path / "g.onnx", "g.onnx")
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_scan_still_reads_canonical_graphs():
    """What is allowed keeps its one meaning: 5-byte canonical tags, over-long lengths, deep If nesting."""
    far = varint((2**29 - 1) << 3 | 2) + varint(1) + b"x"  # the largest field number: an unknown field
    assert gr.scan(far + GRAPH_WITH_LOCATION).locations == ["w.bin"]
    long_length = b"\x0a\x88\x80\x00location" + field(2, b"w.bin")  # the length 8 in 3 bytes, as protobuf reads it
    assert gr.scan(field(7, field(5, field(13, long_length)))).locations == ["w.bin"]
    nested = field(5, field(13, field(1, b"location") + field(2, b"deep.bin")))
    for _ in range(30):  # Graph -> Node -> Attribute -> Graph: 91 messages deep
        nested = field(1, field(5, field(6, nested)))
    assert gr.scan(field(7, nested)).locations == ["deep.bin"]


def test_scan_depth_is_protobufs():
    nested = b""
    for _ in range(40):
        nested = field(1, field(5, field(6, nested)))
    with pytest.raises(gr._Malformed, match="nest deeper than protobuf's limit of 100"):
        gr.scan(field(7, nested))


# ---- cost of a hostile graph: linear, bounded memory, stops at the first refusal ----------------------


def _measure(path: Path) -> tuple[str, float, int]:
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(PackageError) as info:
            gr.graph_refs(path, path.name)
        return str(info.value), time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_16_mb_of_empty_graph_fields_is_refused_at_once(tmp_path):
    """The issue's file: 7.7 s and 1.14 GB before; protobuf would merge 8M empty graphs, the scan stops at the
    second."""
    path = tmp_path / "hostile.onnx"
    path.write_bytes(b"\x3a\x00" * (8 << 20))
    message, seconds, peak = _measure(path)
    assert "ModelProto holds its field 7 twice" in message
    assert seconds < 1.0 and peak < 1 << 20


def test_dense_valid_graph_is_cut_off_by_the_field_budget(tmp_path, monkeypatch):
    """8M empty nodes in one graph are valid protobuf: the walk is stopped by the field budget, with memory
    independent of how many sibling messages there are."""
    monkeypatch.setattr(gr, "MAX_FIELDS", 200_000)
    inner = b"\x0a\x00" * (2 << 20)
    path = tmp_path / "nodes.onnx"
    path.write_bytes(field(7, inner))
    message, _, peak = _measure(path)
    assert "more than 200000 protobuf fields" in message
    assert peak < 1 << 20


# ---- nothing hashed or read before the refusal ----------------------------------------------------------


@pytest.fixture()
def count_hashing(monkeypatch) -> list[int]:
    import polyglot_onnx.package_files as pf

    calls = [0]

    def counted(*args: object) -> object:
        calls[0] += 1
        return hashlib.sha256(*args)

    monkeypatch.setattr(pf.hashlib, "sha256", counted)
    return calls


def test_duplicate_entries_are_refused_before_any_hashing(bert_copy, count_hashing):
    duplicate_entries(10_000)(bert_copy)
    start = time.perf_counter()
    with pytest.raises(PackageError, match="is already listed as manifest.variants.fp32.files\\[0\\]"):
        Embedder.load(bert_copy, provider="cpu")
    assert count_hashing[0] == 0 and time.perf_counter() - start < 5


def test_one_file_behind_two_names_is_refused_before_any_hashing(bert_copy, count_hashing):
    hardlinked_alias(bert_copy)
    with pytest.raises(PackageError, match="are the same file"):
        Embedder.load(bert_copy, provider="cpu")
    assert count_hashing[0] == 0


def test_a_1_gib_tokenizer_is_not_read(bert_copy):
    huge_tokenizer(bert_copy)
    tracemalloc.start()
    try:
        for verify in (True, False):
            with pytest.raises(PackageError, match="larger than its limit of 128 MiB, so it is not read"):
                Embedder.load(bert_copy, provider="cpu", verify=verify)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20


def test_size_is_compared_with_the_manifest_before_reading(tmp_path, count_hashing):
    """A file bigger than its manifest size costs neither a read nor a hash; a limit holds without verify."""
    path = tmp_path / "big.bin"
    path.write_bytes(b"")
    os.truncate(path, 1 << 30)  # sparse: no disk used
    entry = PackageFile("canary", "big.bin", "0" * 64, size=10)
    tracemalloc.start()
    try:
        with pytest.raises(PackageError, match="is 1073741824 bytes, the manifest says 10"):
            read_file(tmp_path, entry, verify=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20 and count_hashing[0] == 0


# ---- canary shapes: typed errors, not IndexError in verify -----------------------------------------------


@pytest.mark.parametrize(
    "change, fragment",
    [
        (no_canary_texts, "(it holds no texts)"),
        (tensor_shape("sentence", [-48, -64]), "tensor 'sentence' has shape [-48, -64]"),
        (tensor_shape("sentence", [2**32, 2**32], empty=True), "tensor 'sentence' has shape [4294967296, 4294967296]"),
        (tensor_shape("sentence", [2**40, 0, 2**40], empty=True), "has shape [1099511627776, 0, 1099511627776]"),
        (tensor_shape("sentence", [64, 48]), "sentence is [64, 48], expected [48, 64]"),
        (tensor_shape("mask_top_ids", [48, 0], empty=True), "mask_top_ids is [48, 0], expected [48, k]"),
        (tensor_shape("sentence", [48, 64.0]), "tensor 'sentence': TypeError"),
    ],
    ids=["no-texts", "negative", "overflowing", "overflowing-zero", "transposed", "no-top-k", "float-dim"],
)
def test_bad_canary_shapes_are_package_errors(bert_copy, change, fragment):
    from polyglot_onnx.runtime.selfcheck import verify_package

    canary_header(change)(bert_copy)
    with pytest.raises(PackageError, match="is not a valid canary file") as info:
        verify_package(bert_copy, "fp32", "cpu")
    message = str(info.value)
    assert fragment in message and "\n" not in message and "--canary-only" in message


# ---- load() takes a directory ----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [Embedder, FillMask])
@pytest.mark.parametrize("directory", [None, 42, b"/tmp/pkg", ["pkg"]], ids=["none", "int", "bytes", "list"])
@pytest.mark.parametrize("self_check", [False, True])
def test_load_needs_a_package_directory(cls, directory, self_check):
    with pytest.raises(InputError, match="pass the package directory as a str or pathlib.Path") as info:
        cls.load(directory, provider="cpu", self_check=self_check)
    assert str(info.value).startswith(f"{cls.__name__}.load got ")


def test_tokenizer_size_is_recorded_at_export_and_checked_before_reading(bert_copy):
    """The export records tokenizer.json's size; a tokenizer that does not have it is refused unread."""
    import json

    manifest = json.loads((bert_copy / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["tokenizer_size"] == (bert_copy / "tokenizer.json").stat().st_size
    with (bert_copy / "tokenizer.json").open("ab") as f:
        f.write(b" " * 10)
    with pytest.raises(PackageError, match=r"tokenizer\.json is \d+ bytes, the manifest says \d+"):
        Embedder.load(bert_copy, provider="cpu")
