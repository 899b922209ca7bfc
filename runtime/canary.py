"""Canary references: the fp32 graph's outputs on a small multilingual text set, stored in the package.

Export and quantize write them (``write_canary``); ``polyglot-onnx verify`` and ``self_check=True``
re-run a variant on the deployment machine and compare (runtime/selfcheck.py), with no torch and no
fp32 graph needed there.

File format: ``canary.safetensors``, written and read here with numpy alone. Safetensors is an
8-byte header length, a JSON header (dtype, shape, byte range per tensor, plus string metadata) and
raw little-endian bytes: nothing in it is executable (unlike pickle / ``np.load(allow_pickle=True)``),
the reader checks every offset before touching the bytes, and the ``safetensors`` library and its
tools open the same file. The texts the references were made from travel in its metadata, so a later
polyglot-onnx with a different built-in canary set still checks the texts the package was built with.
"""

from __future__ import annotations

import json
import math
import os
import struct
import warnings
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from polyglot_onnx import manifest as mf
from polyglot_onnx.errors import PackageError, TruncationWarning

CANARY_FILE = "canary.safetensors"
FORMAT = "polyglot-onnx-canary/1"
TOP_K = 10  # mask predictions kept per text: enough for top-5 overlap and for deciding near-ties
BATCH = 8  # short canary texts: small batches pad less (measured faster than 16 or 48)
MAX_HEADER = 1 << 24
DTYPES: dict[str, np.dtype] = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "I64": np.dtype("<i8")}


@dataclass(frozen=True)
class CanaryText:
    text: str
    language: str
    script: str


def builtin_texts() -> list[CanaryText]:
    """polyglot_onnx/data/canary.jsonl: 2 texts per language of the drift corpus (short and long)."""
    raw = resources.files("polyglot_onnx").joinpath("data/canary.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in raw.splitlines() if line.strip()]
    return [CanaryText(r["text"], r["language"], r["script"]) for r in rows]


@dataclass(frozen=True)
class CanaryOutputs:
    """One graph's outputs on the canary set; mask fields are None for embedding-only packages."""

    sentence: np.ndarray  # [n, hidden] float32, the package's default pooling, not normalized
    nonfinite: np.ndarray  # [n] int64: NaN/Inf count per text (sentence + mask logits)
    top_ids: np.ndarray | None = None  # [n, TOP_K] int64, best first
    top_probs: np.ndarray | None = None  # [n, TOP_K] float32


@dataclass(frozen=True)
class CanaryReference:
    texts: list[CanaryText]
    mask_at: list[int]  # masked token index per text ([] without an MLM head)
    outputs: CanaryOutputs
    meta: dict[str, Any]


def middle_content_token(special_tokens_mask: list[int]) -> int:
    """The token the masked copy hides: the middle non-special one (as the drift checker does)."""
    content = [i for i, special in enumerate(special_tokens_mask) if not special]
    if not content:
        raise PackageError("a canary text has no content tokens with this tokenizer: re-export the package")
    return content[len(content) // 2]


def _top_k(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    x = logits.astype(np.float64)
    probs = np.exp(x - x.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    k = min(k, probs.shape[-1])
    idx = np.argpartition(-probs, k - 1, axis=-1)[:, :k]
    order = np.argsort(-np.take_along_axis(probs, idx, -1), axis=-1, kind="stable")
    ids = np.take_along_axis(idx, order, -1)
    return ids.astype(np.int64), np.take_along_axis(probs, ids, -1).astype(np.float32)


def run_canary(
    engine: Any, texts: list[CanaryText], mask_at: list[int] | None = None
) -> tuple[CanaryOutputs, list[int]]:
    """Run ``texts`` (and with an MLM head their masked copies) through ``engine``; also returns the mask positions."""
    from polyglot_onnx.runtime.embedder import POOLING_OUTPUTS
    from polyglot_onnx.runtime.text import length_sorted_batches, pad_ids

    manifest = engine.manifest
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        encodings = engine.text.encode([t.text for t in texts])
    ids = [list(e.ids) for e in encodings]
    mask_id = manifest.tokenizer.mask_token_id
    has_head = manifest.model.has_mlm_head and mask_id is not None
    if has_head and not mask_at:
        mask_at = [middle_content_token(list(e.special_tokens_mask)) for e in encodings]
    if has_head and (len(mask_at or []) != len(ids) or any(not 0 <= m < len(r) for m, r in zip(mask_at or [], ids))):
        raise PackageError(
            f"{CANARY_FILE} does not fit this package's tokenizer: recreate it with "
            "'polyglot-onnx quantize DIR --canary-only'"
        )
    n = len(texts)
    sentence = np.zeros((n, manifest.model.embedding_dim or manifest.model.hidden_size), np.float32)
    nonfinite = np.zeros(n, np.int64)
    top_ids = np.zeros((n, TOP_K), np.int64) if has_head else None
    top_probs = np.zeros((n, TOP_K), np.float32) if has_head else None
    pooled = POOLING_OUTPUTS[manifest.model.default_pooling]
    pad = manifest.tokenizer.pad_token_id
    for batch in length_sorted_batches([len(r) for r in ids], BATCH):
        plain, attn = pad_ids([ids[i] for i in batch], pad)
        (vectors,) = engine.run([pooled], plain, attn)
        sentence[batch] = vectors
        nonfinite[batch] = (~np.isfinite(vectors)).sum(axis=-1)
        if top_ids is None or top_probs is None or mask_at is None:
            continue
        rows = [list(ids[i]) for i in batch]
        for row, i in zip(rows, batch):
            row[mask_at[i]] = int(mask_id)
        masked, m_attn = pad_ids(rows, pad)
        positions = np.array([r * masked.shape[1] + mask_at[i] for r, i in enumerate(batch)], np.int64)
        (logits,) = engine.run([mf.MASK_LOGITS], masked, m_attn, positions)
        nonfinite[batch] += (~np.isfinite(logits)).sum(axis=-1)
        finite = np.nan_to_num(np.asarray(logits), nan=-np.inf, posinf=float(np.finfo(np.float32).max))
        top_ids[batch], top_probs[batch] = _top_k(finite, TOP_K)
    return CanaryOutputs(sentence, nonfinite, top_ids, top_probs), list(mask_at or [])


# --- the file: minimal safetensors, numpy only -------------------------------------------------


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """Temp file + rename, so an interrupted write never leaves a half file behind."""
    codes = {v: k for k, v in DTYPES.items()}
    header: dict[str, Any] = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        raw = data.tobytes()
        span = [offset, offset + len(raw)]
        header[name] = {"dtype": codes[data.dtype], "shape": list(data.shape), "data_offsets": span}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header, ensure_ascii=False).encode("utf-8")
    head += b" " * (-len(head) % 8)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(struct.pack("<Q", len(head)) + head)
        fh.writelines(blobs)
    os.replace(tmp, path)


def read_safetensors(raw: bytes, name: str = CANARY_FILE) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every offset, dtype and shape is checked before the bytes are used."""
    bad = f"{name} is not a valid canary file"
    hint = "recreate it with 'polyglot-onnx quantize DIR --canary-only'"
    if len(raw) < 8:
        raise PackageError(f"{bad} (truncated): {hint}")
    (size,) = struct.unpack("<Q", raw[:8])
    if size > min(MAX_HEADER, len(raw) - 8):
        raise PackageError(f"{bad} (header size {size}): {hint}")
    try:
        header = json.loads(raw[8 : 8 + size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise PackageError(f"{bad} (header is not JSON): {hint}") from err
    if not isinstance(header, dict):
        raise PackageError(f"{bad} (header is not an object): {hint}")
    body = memoryview(raw)[8 + size :]
    meta = header.pop("__metadata__", {}) or {}
    tensors = {}
    for tensor, spec in header.items():
        try:
            dtype = DTYPES[spec["dtype"]]
            shape, (start, end) = _ints(spec["shape"]), _ints(spec["data_offsets"])
        except (KeyError, TypeError, ValueError) as err:
            raise PackageError(f"{bad} (tensor {tensor!r}: {type(err).__name__}): {hint}") from err
        if len(shape) > 4 or any(not 0 <= d < 1 << 31 for d in shape):
            raise PackageError(f"{bad} (tensor {tensor!r} has shape {_brief(shape)}): {hint}")
        # math.prod on Python ints: exact, where np.prod wraps around for dimensions like 2**40
        if not 0 <= start <= end <= len(body) or end - start != math.prod(shape) * dtype.itemsize:
            raise PackageError(f"{bad} (tensor {tensor!r} has inconsistent offsets): {hint}")
        tensors[tensor] = np.frombuffer(body[start:end], dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise PackageError(f"{bad} (metadata must map names to strings): {hint}")
    return tensors, meta


def _ints(value: Any) -> tuple[int, ...]:
    """A JSON list of integers (not floats, strings or booleans, which int() would quietly accept)."""
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise TypeError("not a list of integers")
    return tuple(value)


def _brief(shape: tuple[int, ...]) -> str:
    text = str(list(shape))
    return text if len(text) <= 60 else text[:60] + "...]"


def _check_shapes(outputs: CanaryOutputs, mask_at: list[int], texts: int, width: int) -> None:
    """Every row a text, every width the package's: verify indexes them per text and per top-k rank, so a
    file that passed the byte checks but not these would fail there as an IndexError."""
    if texts == 0:
        raise ValueError("it holds no texts")
    if outputs.sentence.shape != (texts, width):
        raise ValueError(f"sentence is {_brief(outputs.sentence.shape)}, expected [{texts}, {width}]")
    if outputs.top_ids is None or outputs.top_probs is None:
        return
    if outputs.top_ids.ndim != 2 or outputs.top_ids.shape[0] != texts or not outputs.top_ids.shape[1]:
        raise ValueError(f"mask_top_ids is {_brief(outputs.top_ids.shape)}, expected [{texts}, k]")
    if outputs.top_probs.shape != outputs.top_ids.shape:
        raise ValueError(f"mask_top_probs is {_brief(outputs.top_probs.shape)}, not mask_top_ids' shape")
    if len(mask_at) != texts:
        raise ValueError(f"mask_at has {len(mask_at)} entries for {texts} texts")


def read_canary(package: Any) -> CanaryReference:
    """The stored reference, read through the package (confined; sha256-checked on the bytes parsed)."""
    entry = package.manifest.canary
    tensors, meta = read_safetensors(package.read_bytes(entry, "canary"), entry.path)
    try:
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT}")
        texts = [CanaryText(t["text"], t["language"], t["script"]) for t in json.loads(meta["texts"])]
        if not all(isinstance(v, str) for t in texts for v in (t.text, t.language, t.script)):
            raise ValueError("a text, language or script is not a string")
        has_mask = "mask_top_ids" in tensors
        outputs = CanaryOutputs(
            sentence=tensors["sentence"].astype(np.float32),
            nonfinite=np.zeros(len(texts), np.int64),
            top_ids=tensors["mask_top_ids"].astype(np.int64) if has_mask else None,
            top_probs=tensors["mask_top_probs"].astype(np.float32) if has_mask else None,
        )
        mask_at = [int(m) for m in tensors["mask_at"].reshape(-1)] if has_mask else []
        model = package.manifest.model
        _check_shapes(outputs, mask_at, len(texts), model.embedding_dim or model.hidden_size)
    except (KeyError, TypeError, ValueError, RecursionError) as err:
        raise PackageError(
            f"{entry.path} is not a valid canary file ({err}): recreate it with "
            "'polyglot-onnx quantize DIR --canary-only'"
        ) from err
    return CanaryReference(texts, mask_at, outputs, {k: v for k, v in meta.items() if k != "texts"})


def write_canary(root: Path, verify: bool = True, texts: list[CanaryText] | None = None) -> mf.Manifest:
    """Run the package's fp32 graph on the canary set, store the outputs and list the file in manifest.json."""
    from polyglot_onnx.runtime.cpu import machine_block
    from polyglot_onnx.runtime.engine import load_engine

    texts = texts or builtin_texts()
    engine = load_engine(root, "cpu", "fp32", verify=verify)
    outputs, mask_at = run_canary(engine, texts)
    tensors = {"sentence": outputs.sentence}
    if outputs.top_ids is not None and outputs.top_probs is not None:
        tensors |= {"mask_at": np.asarray(mask_at, np.int64), "mask_top_ids": outputs.top_ids,
                    "mask_top_probs": outputs.top_probs}
    if int(outputs.nonfinite.sum()):
        raise PackageError("the fp32 graph gives NaN/Inf on the canary texts: the package is not usable; re-export it")
    fp32 = engine.package.manifest.variants["fp32"]
    meta = {
        "format": FORMAT,
        "texts": json.dumps([asdict(t) for t in texts], ensure_ascii=False),
        "fp32_sha256": fp32.files[0].sha256,
        "machine": json.dumps(machine_block(engine.provider)),
    }
    write_safetensors(root / CANARY_FILE, tensors, meta)
    manifest = mf.read_manifest(root)
    updated = replace(manifest, canary=mf.file_entry(root, CANARY_FILE))
    mf.write_manifest(root, updated)
    return updated
