"""Parquet shards: their schema, their atomic commit, and the job's state read back from them.

The committed shard files are the ledger. Shard k is written to a temporary name, fsynced, then
renamed to ``part-0000k.parquet`` and the directory fsynced; its footer records the rows it covers and
where the input stands after it. A file under the final name is therefore complete, and the next run
resumes after the last one. A crash can leave only a temporary file, which the next run deletes.
Bad rows go to ``_errors/part-0000k.jsonl``, committed the same way just before the shard itself.
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

from polyglot_onnx.errors import JobError
from polyglot_onnx.jobs.chunks import Chunk, Position
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


def schema(codec: Codec, output: str, user_ids: bool) -> Any:
    import pyarrow as pa

    vector = pa.list_(pa.field("item", codec.arrow_value_type(), nullable=False), codec.width)
    fields = [pa.field("id", pa.string() if user_ids else pa.int64(), nullable=False)]
    if output == "sentence":
        fields.append(pa.field("embedding", vector, nullable=False))
    else:
        label = "tokens" if output == "token" else "words"
        fields += [pa.field(label, pa.list_(pa.string())), pa.field("offsets", pa.list_(pa.list_(pa.int32(), 2))),
                   pa.field("embedding", pa.list_(vector))]
    fields += [pa.field("n_tokens", pa.int32(), nullable=False), pa.field("truncated", pa.bool_(), nullable=False)]
    return pa.schema(fields)


def build_table(chunk: Chunk, encoded: Encoded, codec: Codec, output: str, user_ids: bool, meta: dict[str, Any]) -> Any:
    """The good rows of ``chunk``, in input order, as an Arrow table carrying ``meta`` in its schema."""
    import pyarrow as pa

    good = [i for i, reason in enumerate(chunk.reasons) if reason is None]
    sch = schema(codec, output, user_ids).with_metadata({META_KEY: json.dumps(meta).encode()})
    ids = [chunk.ids[i] for i in good]
    columns: dict[str, Any] = {"id": pa.array(ids, type=sch.field("id").type)}
    vector_type = sch.field("embedding").type
    if output == "sentence":
        flat = codec.encode(encoded.vectors).reshape(-1)
        columns["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(flat), type=vector_type)
    else:
        label = "tokens" if output == "token" else "words"
        columns[label] = pa.array([getattr(r, label) for r in encoded.vectors], type=sch.field(label).type)
        columns["offsets"] = pa.array([[list(o) for o in r.offsets] for r in encoded.vectors],
                                      type=sch.field("offsets").type)
        columns["embedding"] = _nested_vectors([r.embeddings for r in encoded.vectors], codec, vector_type)
    columns["n_tokens"] = pa.array(encoded.n_tokens, type=pa.int32())
    columns["truncated"] = pa.array(encoded.truncated, type=pa.bool_())
    return pa.table([columns[f.name] for f in sch], schema=sch)


def _nested_vectors(per_row: list[np.ndarray], codec: Codec, vector_type: Any) -> Any:
    import pyarrow as pa

    lengths = [len(v) for v in per_row]
    hidden = codec.dimension
    stacked = np.concatenate(per_row) if per_row else np.zeros((0, hidden), np.float32)
    inner = pa.FixedSizeListArray.from_arrays(pa.array(codec.encode(stacked).reshape(-1)), type=vector_type.value_type)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, inner, type=vector_type)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, write: Any) -> None:
    """``write(file)`` into a temporary sibling, fsync it, rename it over ``path``, fsync the directory."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    crash_point("before_rename")
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def commit_shard(out_dir: Path, chunk: Chunk, table: Any) -> None:
    """Errors first, then the shard: a committed shard always has its errors file beside it."""
    import pyarrow.parquet as pq

    bad = [{"row": row, "id": ident, "reason": reason}
           for row, ident, reason in zip(chunk.rows(), chunk.ids, chunk.reasons) if reason is not None]
    if bad:
        (out_dir / ERRORS_DIR).mkdir(exist_ok=True)
        lines = "".join(json.dumps(b, ensure_ascii=False) + "\n" for b in bad).encode()
        write_atomic(out_dir / ERRORS_DIR / f"part-{chunk.index:05d}.jsonl", lambda f: f.write(lines))
        crash_point("after_errors")
    write_atomic(out_dir / shard_name(chunk.index), lambda f: pq.write_table(table, f))
    crash_point("after_commit")


@dataclass(frozen=True)
class ShardInfo:
    index: int
    meta: dict[str, Any]

    @property
    def end(self) -> Position:
        return Position(**self.meta["shard"]["end"])


def committed_shards(out_dir: Path) -> list[ShardInfo]:
    """Shards 0..k-1 as committed; stray temporary files from a crash are removed."""
    import pyarrow.parquet as pq

    for stray in list(out_dir.glob(".*.tmp-*")) + list(out_dir.glob(f"{ERRORS_DIR}/.*.tmp-*")):
        stray.unlink()
    names = sorted(p.name for p in out_dir.glob("part-*.parquet"))
    shards = []
    for expected, name in enumerate(names):
        if name != shard_name(expected):
            raise JobError(f"{out_dir} has {name} but no {shard_name(expected)}: the output was edited by hand; "
                           "use a new --out")
        meta = pq.read_schema(out_dir / name).metadata or {}
        if META_KEY not in meta:
            raise JobError(f"{out_dir / name} was not written by embed-corpus: use a new --out")
        shards.append(ShardInfo(expected, json.loads(meta[META_KEY])))
    return shards


def merge_errors(out_dir: Path) -> int:
    """All bad rows in row order into ``_errors.jsonl``; returns their count."""
    parts = sorted((out_dir / ERRORS_DIR).glob("part-*.jsonl")) if (out_dir / ERRORS_DIR).is_dir() else []
    data = b"".join(p.read_bytes() for p in parts)
    write_atomic(out_dir / "_errors.jsonl", lambda f: f.write(data))
    return data.count(b"\n")
