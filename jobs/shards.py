"""Parquet shards: their schema, their table, and the atomic write every file of the job goes through.

Shard k is written to a temporary name in the output folder, fsynced, then renamed to
``data/part-0000k.parquet`` and the directories fsynced, so ``data/`` only ever holds whole shards: every
Parquet reader (polars too, which reads every file under a folder it is given) takes it as it is. Its
footer records the run, the rows it covers, where the input stands after it, and flat ``polyglot.*`` keys
naming the model, variant and provider that made its vectors. What makes it committed, and how a resume
verifies it, is in ledger.py.
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from polyglot_onnx.jobs.chunks import Chunk
from polyglot_onnx.jobs.codecs import Codec
from polyglot_onnx.jobs.encode import Encoded

META_KEY = b"polyglot_onnx"
ERRORS_DIR = "_errors"
KILL_ENV = "POLYGLOT_ONNX_JOB_KILL"  # tests: "POINT:N" SIGKILLs the job the N-th time it reaches POINT
_reached: Counter[str] = Counter()


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def crash_point(point: str) -> None:
    """Test hook: a real SIGKILL at a chosen step, to prove that no step can lose or repeat work."""
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    _reached[point] += 1
    name, _, count = spec.partition(":")
    if name == point and _reached[point] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class ShardColumns:
    """A job's columns besides the codec: fixed when it starts, the same in every shard."""

    output: str  # sentence, token or word
    user_ids: bool  # --id-column given: ids are strings
    vector: str = "embedding"  # --vector-column
    kept: tuple[tuple[str, Any], ...] = ()  # --keep-columns as (name, Arrow type), in the order given


def schema(codec: Codec, columns: ShardColumns) -> Any:
    """id, the kept input columns, (tokens|words, offsets), the vectors, n_tokens, truncated. Sentence vectors are
    fixed-size lists (pyarrow, polars and datasets read them as arrays of the width); token and word vectors are
    a variable-length list of them per row."""
    import pyarrow as pa

    vector = pa.list_(pa.field("item", codec.arrow_value_type(), nullable=False), codec.width)
    fields = [pa.field("id", pa.string() if columns.user_ids else pa.int64(), nullable=False)]
    fields += [pa.field(name, kind) for name, kind in columns.kept]
    if columns.output == "sentence":
        fields.append(pa.field(columns.vector, vector, nullable=False))
    else:
        label = "tokens" if columns.output == "token" else "words"
        fields += [pa.field(label, pa.list_(pa.string())), pa.field("offsets", pa.list_(pa.list_(pa.int32(), 2))),
                   pa.field(columns.vector, pa.list_(vector))]
    fields += [pa.field("n_tokens", pa.int32(), nullable=False), pa.field("truncated", pa.bool_(), nullable=False)]
    return pa.schema(fields)


def build_table(chunk: Chunk, encoded: Encoded, codec: Codec, columns: ShardColumns, meta: dict[str, Any],
                provenance: dict[str, str]) -> Any:
    """The good rows of ``chunk``, in input order, as an Arrow table carrying ``meta`` (the ledger's record) and
    the flat ``provenance`` keys (what made the vectors) in its schema's key-value metadata."""
    import pyarrow as pa

    good = [i for i, reason in enumerate(chunk.reasons) if reason is None]
    metadata = {META_KEY: json.dumps(meta).encode(), **{k.encode(): v.encode() for k, v in provenance.items()}}
    sch = schema(codec, columns).with_metadata(metadata)
    ids = [chunk.ids[i] for i in good]
    out: dict[str, Any] = {"id": pa.array(ids, type=sch.field("id").type)}
    for name, kind in columns.kept:
        cells = chunk.kept[name]
        out[name] = pa.array([cells[i] for i in good], type=kind)
    vector_type = sch.field(columns.vector).type
    if columns.output == "sentence":
        flat = codec.encode(encoded.vectors).reshape(-1)
        out[columns.vector] = pa.FixedSizeListArray.from_arrays(pa.array(flat), type=vector_type)
    else:
        label = "tokens" if columns.output == "token" else "words"
        out[label] = pa.array([getattr(r, label) for r in encoded.vectors], type=sch.field(label).type)
        out["offsets"] = pa.array([[list(o) for o in r.offsets] for r in encoded.vectors],
                                  type=sch.field("offsets").type)
        out[columns.vector] = _nested_vectors([r.embeddings for r in encoded.vectors], codec, vector_type)
    out["n_tokens"] = pa.array(encoded.n_tokens, type=pa.int32())
    out["truncated"] = pa.array(encoded.truncated, type=pa.bool_())
    return pa.table([out[f.name] for f in sch], schema=sch)


def _nested_vectors(per_row: list[np.ndarray], codec: Codec, vector_type: Any) -> Any:
    import pyarrow as pa

    lengths = [len(v) for v in per_row]
    hidden = codec.dimension
    stacked = np.concatenate(per_row) if per_row else np.zeros((0, hidden), np.float32)
    inner = pa.FixedSizeListArray.from_arrays(pa.array(codec.encode(stacked).reshape(-1)), type=vector_type.value_type)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, inner, type=vector_type)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, write: Any, tmp_dir: Path | None = None) -> None:
    """``write(file)`` into a temporary file (beside ``path``, or in ``tmp_dir`` on the same file system), fsync
    it, rename it over ``path``, fsync the directories. Shards pass the output folder as ``tmp_dir``: a
    half-written file never sits among them, where polars would refuse the folder for its odd extension."""
    folder = tmp_dir or path.parent
    tmp = folder / f".{path.name}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    crash_point("before_rename")
    os.replace(tmp, path)
    fsync_dir(path.parent)
    if folder != path.parent:
        fsync_dir(folder)


def merge_errors(out_dir: Path) -> int:
    """All bad rows in row order into ``_errors.jsonl``; returns their count."""
    parts = sorted((out_dir / ERRORS_DIR).glob("part-*.jsonl")) if (out_dir / ERRORS_DIR).is_dir() else []
    data = b"".join(p.read_bytes() for p in parts)
    write_atomic(out_dir / "_errors.jsonl", lambda f: f.write(data))
    return data.count(b"\n")
