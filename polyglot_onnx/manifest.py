"""manifest.json: the only contract between export, quantize and the runtime.

Light on purpose (json, hashlib, dataclasses): the runtime reads it without torch or onnx.
Reading is strict (manifest_schema): every field is type-checked, and keys this version does not know
are additions by a newer writer of the same format version, ignored with a debug log (and not kept on
round trips). A higher format_version is refused with the version that wrote it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from polyglot_onnx.errors import PackageError
from polyglot_onnx.manifest_schema import MAX_MANIFEST_BYTES, build, check_size, json_type, malformed, parse_limited
from polyglot_onnx.package_files import PackageFile, check_file, path_problem, read_file

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
# tokenizer.json is read whole and parsed in memory, and the manifest records no size for it: the
# largest of a supported model (Gemma's 256k-piece vocabulary, mmBERT) is about 33 MB, so 4x that.
MAX_TOKENIZER_BYTES = 128 * 1024 * 1024

# Graph interface names, shared by the exporter that writes them and the runtime that feeds them.
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
MASK_POSITIONS = "mask_positions"
TOKEN_EMBEDDINGS = "token_embeddings"
SENTENCE_EMBEDDING = "sentence_embedding"
CLS_EMBEDDING = "cls_embedding"
MASK_LOGITS = "mask_logits"
# fill-mask in the graph (export/topk.py): k is an input with a default, scores are fp32 softmax probabilities
MASK_TOP_K = "mask_top_k"
MASK_TOP_SCORES = "mask_top_scores"
MASK_TOP_IDS = "mask_top_ids"
# sentence-transformers' similarity functions (config_sentence_transformers.json similarity_fn_name)
SIMILARITY_FUNCTIONS = ("cosine", "dot", "euclidean", "manhattan")


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
    local_attention: str | None = None  # "banded" or "dense" for models with local layers
    # banded exports: sequences of at most this many tokens take each layer's dense route (export/dispatch.py)
    dense_up_to: int | None = None
    # sentence-transformers modules exported into sentence_embedding, e.g. ["Pooling(cls)", "Dense(..)", "Normalize"]
    sentence_pipeline: list[str] = field(default_factory=list)
    embedding_dim: int | None = None  # sentence_embedding width when a Dense module changes it
    prompts: dict[str, str] = field(default_factory=dict)  # config_sentence_transformers.json prompts
    default_prompt_name: str | None = None
    attention: str = "fused"  # "unfused" where no fused ONNX operator exists (DeBERTa's disentangled attention)
    # config_sentence_transformers.json's similarity_fn_name (None: not recorded, Embedder.similarity uses cosine)
    similarity_fn_name: str | None = None


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

    def package_file(self, label: str) -> PackageFile:
        return PackageFile(label, self.path, self.sha256, self.size)


FALLBACK_RANK = 1000  # fp32: what variant="auto" uses on any provider when nothing better qualifies


@dataclass(frozen=True)
class VariantFacts:
    """What a variant is, written into its manifest entry from one table (quantize/recipes.py; the export for
    fp32) and read by the runtime, the drift checker, the self-check, the bench and the CLI."""

    provider: str | None  # "cpu" or "cuda": where it is made to run; None runs anywhere (fp32)
    batch_invariant: bool  # a text's result does not depend on its batch neighbours or padding
    auto_rank: int | None  # variant="auto" on its provider tries lower ranks first; None: only by name
    gate: dict[str, float] = field(default_factory=dict)  # the drift gate it must pass (polyglot_onnx/gates.py)

    def runs_on(self, provider: str) -> bool:
        return self.provider is None or self.provider == provider


@dataclass(frozen=True)
class Variant:
    """One precision of the graph: its file(s), fused-op counts and evidence of accuracy."""

    name: str
    files: list[FileEntry]
    op_counts: dict[str, int] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    facts: VariantFacts | None = None  # None in packages written before the facts were recorded

    def described(self) -> VariantFacts:
        """This variant's facts: as recorded, else (older packages) what its name meant when they were written."""
        if self.facts is not None:
            return self.facts
        legacy = LEGACY_FACTS.get(self.name, UNKNOWN_FACTS)
        said = self.extra.get("batch_invariant")  # recorded in extra since recipe revision 3
        return legacy if not isinstance(said, bool) else replace(legacy, batch_invariant=said)

    def drift_gate(self, overrides: dict[str, float] | None = None) -> dict[str, float]:
        """The drift gate this variant must pass: its recorded one (the name's default when none is recorded),
        with ``overrides`` on top."""
        gate = self.described().gate
        if not gate:
            from polyglot_onnx.gates import gate_for

            return gate_for(self.name, overrides)
        return dict(gate) | (overrides or {})

    @property
    def graph_file(self) -> str:
        return self.files[0].path

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def drift(self, provider: str = "cpu") -> dict[str, Any] | None:
        """The drift evidence measured on ``provider`` (validation[drift_key(provider)]), or None."""
        evidence = self.validation.get(drift_key(provider))
        return evidence if isinstance(evidence, dict) else None

    def evidence_for(self, provider: str) -> tuple[str, dict[str, Any] | None]:
        """(provider it was measured on, evidence) for a variant about to run on ``provider``: that provider's
        own evidence, else the CPU's (the drift checker ran there), else none."""
        own = self.drift(provider)
        if own is not None or provider == "cpu":
            return provider, own
        return "cpu", self.drift("cpu")


def fp32_facts() -> VariantFacts:
    """The exported graph itself (written by the export): runs anywhere, exact, auto's last resort."""
    from polyglot_onnx.gates import DEFAULT_GATES

    return VariantFacts(None, True, FALLBACK_RANK, DEFAULT_GATES["fp32"])


def _legacy_facts() -> dict[str, VariantFacts]:
    from polyglot_onnx.gates import DEFAULT_GATES

    return {
        "fp32": fp32_facts(),
        "int8": VariantFacts("cpu", False, 0, DEFAULT_GATES["int8"]),
        "int8-static": VariantFacts("cpu", False, 1, DEFAULT_GATES["int8"]),
        "int8-dynamic": VariantFacts("cpu", False, None, DEFAULT_GATES["int8"]),
        "fp16": VariantFacts("cuda", True, 0, DEFAULT_GATES["fp16"]),
    }


# Packages written before variants recorded their facts: what each name meant then (read-only compatibility;
# new variants get their facts from quantize/recipes.py). An unknown old variant is run by name only.
LEGACY_FACTS = _legacy_facts()
UNKNOWN_FACTS = VariantFacts("cpu", False, None, {})


def drift_key(provider: str) -> str:
    """Where a variant's validation keeps the drift evidence measured on ``provider``: 'drift' for the CPU (as
    packages always had it), 'drift_cuda' for CUDA (polyglot-onnx drift --provider cuda)."""
    return "drift" if provider == "cpu" else f"drift_{provider}"


DRIFT_PROVIDERS = ("cpu", "cuda")


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
    canary: FileEntry | None = None  # fp32 reference outputs for the deployment self-check (runtime/canary.py)
    tokenizer_size: int | None = None  # bytes of tokenizer.json, checked before it is read (None: older packages)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["variants"] = {k: asdict(v) for k, v in self.variants.items()}
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """Every field type-checked (manifest_schema), then the values the runtime relies on."""
        check_format_version(data)
        manifest = build(cls, data, "manifest")
        check_values(manifest)
        return manifest

    def package_files(self, variant: Variant) -> list[PackageFile]:
        """Every file loading ``variant`` reads: its graph files, the tokenizer, the canary references."""
        files = [entry.package_file(f"variants.{variant.name}.files[{i}]") for i, entry in enumerate(variant.files)]
        files.append(
            PackageFile("tokenizer.file", self.tokenizer.file, self.tokenizer_sha256, size=self.tokenizer_size,
                        max_size=MAX_TOKENIZER_BYTES)
        )
        if self.canary is not None:
            files.append(self.canary.package_file("canary"))
        return files


def check_format_version(data: Any) -> None:
    """A newer format is refused by name before its structure is read: it may not be ours to parse."""
    if not isinstance(data, dict):
        raise PackageError(f"manifest.json holds {json_type(data)}, not an object: re-export the package")
    version = data.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        versions = data.get("versions")
        writer = versions.get("polyglot-onnx") if isinstance(versions, dict) else None
        by = f"polyglot-onnx {writer}" if isinstance(writer, str) and len(writer) < 40 else "a newer polyglot-onnx"
        raise PackageError(
            f"manifest.json was written by {by} (format {version}); this polyglot-onnx {_own_version()} reads "
            f"format {FORMAT_VERSION}: upgrade polyglot-onnx (pip install -U polyglot-onnx)"
        )
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise PackageError(
            f"manifest.json has format_version {_short(version)}, this polyglot-onnx reads {FORMAT_VERSION}: "
            "re-export the package with this version"
        )


def _own_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("polyglot-onnx")
    except PackageNotFoundError:
        return "(source tree)"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def check_values(m: Manifest) -> None:
    """What types cannot say: non-empty lists, plain relative paths, hex digests, positive sizes."""
    if not m.variants:
        raise malformed("manifest.variants", "is empty")
    for key, variant in m.variants.items():
        where = f"manifest.variants.{key}"
        if variant.name != key:
            raise malformed(f"{where}.name", f"is {_short(variant.name)}, not {key!r}")
        if not variant.files:
            raise malformed(f"{where}.files", "is empty")
        for i, entry in enumerate(variant.files):
            _check_entry(entry, f"{where}.files[{i}]")
        for provider in DRIFT_PROVIDERS:
            key = drift_key(provider)
            _check_drift(variant.validation.get(key), f"{where}.validation.{key}")
    if m.canary is not None:
        _check_entry(m.canary, "manifest.canary")
    problem = path_problem(m.tokenizer.file)
    if problem:
        raise malformed("manifest.tokenizer.file", problem)
    for variant in m.variants.values():
        _check_listed_once(m, variant)
    for name in ("inputs", "outputs"):
        names = getattr(m, name)
        if not names or len(set(names)) != len(names):
            raise malformed(f"manifest.{name}", "must list each graph name once")
    if m.tokenizer_sha256 and not SHA256_HEX.fullmatch(m.tokenizer_sha256):
        raise malformed("manifest.tokenizer_sha256", "is not a sha256 hex digest")
    if m.tokenizer_size is not None and not 0 < m.tokenizer_size <= MAX_TOKENIZER_BYTES:
        raise malformed("manifest.tokenizer_size", f"must be from 1 to {MAX_TOKENIZER_BYTES} bytes, not {m.tokenizer_size}")
    positive = {
        "model.hidden_size": m.model.hidden_size,
        "model.vocab_size": m.model.vocab_size,
        "model.max_length": m.model.max_length,
        "tokenizer.max_length": m.tokenizer.max_length,
    }
    for where, value in positive.items():
        if value < 1:
            raise malformed(f"manifest.{where}", f"must be at least 1, not {value}")
    if m.tokenizer.pad_token_id < 0 or (m.tokenizer.mask_token_id is not None and m.tokenizer.mask_token_id < 0):
        raise malformed("manifest.tokenizer", "has a negative token id")


def _check_drift(drift: Any, where: str) -> None:
    """The evidence fields that decide which variant loads (auto, the CPU-kernel warning) have fixed types."""
    if drift is None:
        return
    if not isinstance(drift, dict):
        raise malformed(where, f"must be an object, not {json_type(drift)}")
    if "passed" in drift and not isinstance(drift["passed"], bool):
        raise malformed(f"{where}.passed", f"must be true or false, not {json_type(drift['passed'])}")
    for key in ("machine", "overall", "corpus", "gate"):
        if drift.get(key) is not None and not isinstance(drift[key], dict):
            raise malformed(f"{where}.{key}", f"must be an object, not {json_type(drift[key])}")


def _same_file_key(path: str) -> str:
    """One spelling per file: './a', 'a//b', 'a\\b' (a separator on Windows) name what 'a', 'a/b' name."""
    return PurePosixPath(path.replace("\\", "/")).as_posix()


def _check_listed_once(m: Manifest, variant: Variant) -> None:
    """Every file loading ``variant`` reads, listed once: a repeated entry would be checked and hashed
    again (10,000 copies of one entry, 10,000 hashes), and is never what the exporter writes."""
    first: dict[str, str] = {}
    for entry in m.package_files(variant):
        where = f"manifest.{entry.label}"
        earlier = first.setdefault(_same_file_key(entry.path), where)
        if earlier != where:
            raise malformed(
                where, f"({_short(entry.path)}) is already listed as {earlier}: a package lists each file once"
            )


def _check_entry(entry: FileEntry, where: str) -> None:
    problem = path_problem(entry.path)
    if problem:
        raise malformed(f"{where}.path", f"({_short(entry.path)}) {problem}")
    if entry.sha256 and not SHA256_HEX.fullmatch(entry.sha256):
        raise malformed(f"{where}.sha256", "is not a sha256 hex digest")
    if entry.size < 0:
        raise malformed(f"{where}.size", "is negative")


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
    """Read and validate a package's manifest: confined, size- and depth-limited, strictly typed."""
    root = Path(directory)
    if not root.is_dir():
        raise PackageError(f"{root} is not a directory: pass a package made by 'polyglot-onnx export'")
    if not (root / MANIFEST_NAME).is_file() and not (root / MANIFEST_NAME).is_symlink():
        raise PackageError(
            f"{root} is not a polyglot-onnx package (no {MANIFEST_NAME}): "
            "create one with 'polyglot-onnx export MODEL --out DIR'"
        )
    entry = PackageFile(MANIFEST_NAME, MANIFEST_NAME)
    path = check_file(root, entry, verify=False)
    check_size(path.stat().st_size, MANIFEST_NAME)  # before reading it
    raw = read_file(root, PackageFile(MANIFEST_NAME, MANIFEST_NAME, max_size=MAX_MANIFEST_BYTES), verify=False)
    return Manifest.from_dict(parse_limited(raw, MANIFEST_NAME))


def write_text_atomic(path: Path, text: str) -> None:
    """Temp file + fsync + rename: a crash mid-write never leaves a truncated file, and a failed
    write (full disk) leaves no temp file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Write atomically: a crash mid-write never leaves a truncated manifest."""
    write_text_atomic(directory / MANIFEST_NAME, json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False) + "\n")
