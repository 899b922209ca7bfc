"""Helpers that corrupt a copy of a package, one way each, for the trust tests (issues 16 and 25)."""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from polyglot_onnx.manifest import sha256_file


def edit(pkg: Path, change: Callable[[dict], None]) -> None:
    data = json.loads((pkg / "manifest.json").read_text())
    change(data)
    (pkg / "manifest.json").write_text(json.dumps(data))


def rehash(pkg: Path, variant: str = "fp32") -> None:
    """What a faulty build would write: the manifest agrees with the (bad) files."""

    def change(data: dict) -> None:
        for entry in data["variants"][variant]["files"]:
            entry["sha256"] = sha256_file(pkg / entry["path"])
            entry["size"] = (pkg / entry["path"]).stat().st_size

    edit(pkg, change)


def outside_copy(pkg: Path, name: str) -> Path:
    """An identical copy of a package file outside the package: a matching sha256 must not help."""
    target = pkg.parent / "outside" / name
    target.parent.mkdir(exist_ok=True)
    shutil.copy(pkg / name, target)
    return target


def graph_path(pkg: Path, value: str) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        data["variants"]["fp32"]["files"][0]["path"] = value

    return change


def symlink_out(pkg: Path, name: str) -> None:
    target = outside_copy(pkg, name)
    (pkg / name).unlink()
    (pkg / name).symlink_to(target)


def external_data(pkg: Path, location: str, listed: bool) -> None:
    """Re-save the graph with its weights in a side file, then point the graph at ``location``."""
    import onnx

    model = onnx.load(str(pkg / "model.onnx"))
    onnx.save_model(model, str(pkg / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=1024)
    model = onnx.load(str(pkg / "model.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(model, str(pkg / "model.onnx"))
    if location.startswith("../"):
        shutil.move(pkg / "weights.bin", pkg.parent / location[3:])
    files = [{"path": name, "sha256": "", "size": 0} for name in ["model.onnx"] + (["weights.bin"] if listed else [])]
    edit(pkg, lambda d: d["variants"]["fp32"].__setitem__("files", files))
    rehash(pkg)


def nan_weights(pkg: Path) -> None:
    """Overwrite the largest float initializer (the embedding table) with NaN, as a faulty build might."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(pkg / "model.onnx"))
    floats = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    largest = max(floats, key=lambda t: int(np.prod(t.dims)))
    largest.CopyFrom(numpy_helper.from_array(np.full(tuple(largest.dims), np.nan, np.float32), largest.name))
    onnx.save_model(model, str(pkg / "model.onnx"))
    rehash(pkg)


def deep_manifest(pkg: Path) -> None:
    (pkg / "manifest.json").write_text('{"format_version": 1, "model": ' + "[" * 10_000 + "]" * 10_000 + "}")


def huge_manifest(pkg: Path) -> None:
    edit(pkg, lambda d: d.__setitem__("padding", "x" * (17 * 1024 * 1024)))


def unknown_keys(pkg: Path) -> None:
    def change(data: dict) -> None:
        data["added_in_a_later_release"] = {"anything": [1, 2]}
        data["model"]["new_model_fact"] = 3
        data["variants"]["fp32"]["files"][0]["compression"] = "none"

    edit(pkg, change)


def swap_tokenizer(other: Path) -> Callable[[Path], None]:
    return lambda pkg: shutil.copy(other / "tokenizer.json", pkg / "tokenizer.json")


def rename_output(pkg: Path) -> None:
    edit(pkg, lambda d: d.__setitem__("outputs", [o.replace("cls_embedding", "cls_vector") for o in d["outputs"]]))


def tokenizer_is_a_directory(pkg: Path) -> None:
    (pkg / "tokenizer.json").unlink()
    (pkg / "tokenizer.json").mkdir()


def set_key(*path: str | int, value: object) -> Callable[[Path], None]:
    def change(data: dict) -> None:
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return lambda pkg: edit(pkg, change)


def drop_key(key: str) -> Callable[[Path], None]:
    return lambda pkg: edit(pkg, lambda d: d.pop(key))


def newer_format(pkg: Path) -> None:
    """A package written by a future polyglot-onnx 9.1 in format 2."""
    set_key("format_version", value=2)(pkg)
    set_key("versions", "polyglot-onnx", value="9.1")(pkg)


# ---- issue 25: hostile packages -------------------------------------------------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def overlong_graph_tag(pkg: Path) -> None:
    """The graph's weights sign-flipped in an unlisted weights.bin, and ModelProto.graph's tag written as
    the varint 2**32+58: protobuf (onnxruntime) keeps the low 32 bits, field 7, and reads the graph."""
    import onnx

    external_data(pkg, "weights.bin", listed=False)
    weights = np.fromfile(pkg / "weights.bin", np.float32)
    (-weights).tofile(pkg / "weights.bin")
    model = onnx.load(str(pkg / "model.onnx"), load_external_data=False)
    graph = model.graph.SerializeToString()
    model.ClearField("graph")
    (pkg / "model.onnx").write_bytes(model.SerializeToString() + varint(2**32 + 58) + varint(len(graph)) + graph)
    rehash(pkg)


def duplicate_entries(count: int) -> Callable[[Path], None]:
    """The graph's file entry listed ``count`` times: each copy would be hashed again."""

    def change(data: dict) -> None:
        files = data["variants"]["fp32"]["files"]
        files[:] = files[:1] * count

    return lambda pkg: edit(pkg, change)


def hardlinked_alias(pkg: Path) -> None:
    """A second name for the graph file, listed as if it were the graph's external data."""
    os.link(pkg / "model.onnx", pkg / "alias.onnx")

    def change(data: dict) -> None:
        files = data["variants"]["fp32"]["files"]
        files.append({**files[0], "path": "alias.onnx"})

    edit(pkg, change)


def huge_tokenizer(pkg: Path, size: int = 1 << 30) -> None:
    """A sparse 1 GiB tokenizer.json: costs no disk, but reading it would cost a GiB of memory."""
    os.truncate(pkg / "tokenizer.json", size)


def canary_header(change: Callable[[dict], None]) -> Callable[[Path], None]:
    """Rewrite canary.safetensors' JSON header (bytes kept) and list the result in the manifest, as a faulty
    writer would: the file hashes fine, its shapes do not."""

    def mutate(pkg: Path) -> None:
        raw = (pkg / "canary.safetensors").read_bytes()
        (size,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8 : 8 + size])
        change(header)
        head = json.dumps(header).encode()
        head += b" " * (-len(head) % 8)
        (pkg / "canary.safetensors").write_bytes(struct.pack("<Q", len(head)) + head + raw[8 + size :])

        def relist(data: dict) -> None:
            data["canary"]["sha256"] = sha256_file(pkg / "canary.safetensors")
            data["canary"]["size"] = (pkg / "canary.safetensors").stat().st_size

        edit(pkg, relist)

    return mutate


def no_canary_texts(header: dict) -> None:
    header["__metadata__"]["texts"] = "[]"
    for name, spec in header.items():
        if name != "__metadata__":
            spec["shape"][0] = 0
            spec["data_offsets"] = [0, 0]


def tensor_shape(name: str, shape: list[int], empty: bool = False) -> Callable[[dict], None]:
    def change(header: dict) -> None:
        header[name]["shape"] = shape
        if empty:
            header[name]["data_offsets"] = [0, 0]

    return change
