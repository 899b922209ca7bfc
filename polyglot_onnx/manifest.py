"""manifest.json: the only contract between export, quantize and the runtime.

Light on purpose (json, hashlib, dataclasses): the runtime reads it without torch or onnx.
Unknown keys are kept on round trips so a newer stage can add fields an older reader ignores.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from polyglot_onnx.errors import PackageError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1

# Graph interface names, shared by the exporter that writes them and the runtime that feeds them.
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
MASK_POSITIONS = "mask_positions"
TOKEN_EMBEDDINGS = "token_embeddings"
SENTENCE_EMBEDDING = "sentence_embedding"
CLS_EMBEDDING = "cls_embedding"
MASK_LOGITS = "mask_logits"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    source: str
    architecture: str
    num_layers: int
    hidden_size: int
    num_heads: int
    vocab_size: int
    max_length: int
    default_pooling: str
    has_mlm_head: bool
    local_window: int | None = None


@dataclass(frozen=True)
class TokenizerInfo:
    file: str
    vocab_size: int
    max_length: int
    mask_token: str | None
    mask_token_id: int | None
    pad_token_id: int
    special_ids: dict[str, int]


@dataclass(frozen=True)
class FileEntry:
    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Variant:
    """One precision of the graph: its file(s), fused-op counts and evidence of accuracy."""

    name: str
    files: list[FileEntry]
    op_counts: dict[str, int] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def graph_file(self) -> str:
        return self.files[0].path

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class Manifest:
    model: ModelInfo
    tokenizer: TokenizerInfo
    inputs: list[str]
    outputs: list[str]
    variants: dict[str, Variant]
    versions: dict[str, str]
    created: str
    format_version: int = FORMAT_VERSION
    tokenizer_sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["variants"] = {k: asdict(v) for k, v in self.variants.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        try:
            variants = {
                name: Variant(
                    name=v["name"],
                    files=[FileEntry(**f) for f in v["files"]],
                    op_counts=dict(v.get("op_counts", {})),
                    validation=dict(v.get("validation", {})),
                    extra=dict(v.get("extra", {})),
                )
                for name, v in data["variants"].items()
            }
            return cls(
                model=ModelInfo(**data["model"]),
                tokenizer=TokenizerInfo(**data["tokenizer"]),
                inputs=list(data["inputs"]),
                outputs=list(data["outputs"]),
                variants=variants,
                versions=dict(data["versions"]),
                created=data["created"],
                format_version=int(data.get("format_version", FORMAT_VERSION)),
                tokenizer_sha256=data.get("tokenizer_sha256", ""),
            )
        except (KeyError, TypeError) as err:
            raise PackageError(
                f"manifest.json is malformed ({type(err).__name__}: {err}): re-export the package"
            ) from err


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_entry(directory: Path, relative: str) -> FileEntry:
    path = directory / relative
    return FileEntry(path=relative, sha256=sha256_file(path), size=path.stat().st_size)


def read_manifest(directory: str | os.PathLike[str]) -> Manifest:
    """Read and structurally check a package's manifest."""
    root = Path(directory)
    if not root.is_dir():
        raise PackageError(f"{root} is not a directory: pass a package made by 'polyglot-onnx export'")
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise PackageError(
            f"{root} is not a polyglot-onnx package (no {MANIFEST_NAME}): "
            "create one with 'polyglot-onnx export MODEL --out DIR'"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PackageError(f"{path} is not valid JSON ({err}): re-export the package") from err
    if not isinstance(data, dict):
        raise PackageError(f"{path} does not hold a JSON object: re-export the package")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise PackageError(
            f"{path} has format_version {version!r}, this polyglot-onnx reads {FORMAT_VERSION}: "
            "re-export the package with this version"
        )
    return Manifest.from_dict(data)


def write_text_atomic(path: Path, text: str) -> None:
    """Temp file + rename: a crash mid-write never leaves a truncated file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Write atomically: a crash mid-write never leaves a truncated manifest."""
    write_text_atomic(directory / MANIFEST_NAME, json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False) + "\n")


def verify_files(directory: Path, entries: list[FileEntry]) -> None:
    """Check each listed file exists with the recorded size and sha256."""
    for entry in entries:
        path = directory / entry.path
        if not path.is_file():
            raise PackageError(f"package file {entry.path} is missing from {directory}: re-export the package")
        size = path.stat().st_size
        if size != entry.size:
            raise PackageError(
                f"package file {entry.path} is {size} bytes, the manifest says {entry.size}: "
                "the file is truncated or replaced; re-export or re-download the package"
            )
        if sha256_file(path) != entry.sha256:
            raise PackageError(
                f"package file {entry.path} does not match its sha256 in manifest.json: "
                "the file is corrupt or was replaced; re-export or re-download the package"
            )
