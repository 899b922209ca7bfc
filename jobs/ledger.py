"""The ledger: a sealed entry per committed shard, so that a resume trusts only the shards it can verify.

Shard k is committed in three atomic writes (temp file, fsync, rename, directory fsync): its bad rows to
``_errors/part-0000k.jsonl``, the shard to ``data/part-0000k.parquet`` (beside ``_run.json`` in a format 1
run), then its entry to ``_ledger/part-0000k.json``. The entry is the commit point. It names the run
(``run_id`` and the job's fingerprints), the shard's rows and where the input stands after it, and the size
and sha256 of the shard and of its errors part; it is sealed with a sha256 of its own content.

A new run re-hashes every committed shard before it trusts it. A shard with flipped bytes, a zeroed page
or a cut tail, one copied in from another run, or one whose entry is damaged or missing (a run killed
between the shard and its entry) is deleted with its errors part and entry, with a warning, and its rows
are redone. Nothing is parsed before it is verified, so a damaged file never surfaces as a pyarrow error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polyglot_onnx.errors import JobError
from polyglot_onnx.jobs.chunks import Chunk, Position
from polyglot_onnx.jobs.runfile import data_dir
from polyglot_onnx.jobs.shards import ERRORS_DIR, META_KEY, crash_point, fsync_dir, shard_name, write_atomic

LEDGER_DIR = "_ledger"
ENTRY_FORMAT = "polyglot-onnx-shard/1"
HASH_BLOCK = 1 << 20
_SHARD = re.compile(r"part-(\d{5,})\.parquet")
_PART = re.compile(r"part-(\d{5,})\.jsonl?")

log = logging.getLogger("polyglot_onnx")


@dataclass(frozen=True)
class ShardInfo:
    """A verified shard: its index and the footer metadata it was committed with (counts, end position)."""

    index: int
    meta: dict[str, Any]

    @property
    def end(self) -> Position:
        return Position(**self.meta["shard"]["end"])

    @property
    def rows(self) -> int:
        return int(self.meta["shard"]["rows"])


def entry_path(out_dir: Path, index: int) -> Path:
    return out_dir / LEDGER_DIR / f"part-{index:05d}.json"


def errors_path(out_dir: Path, index: int) -> Path:
    return out_dir / ERRORS_DIR / f"part-{index:05d}.jsonl"


def _sha256(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def file_digest(path: Path) -> dict[str, Any] | None:
    """Size and sha256 of a file's bytes; None when it does not exist."""
    digest, size = hashlib.sha256(), 0
    try:
        with open(path, "rb") as f:
            while block := f.read(HASH_BLOCK):
                digest.update(block)
                size += len(block)
    except FileNotFoundError:
        return None
    return {"size": size, "sha256": digest.hexdigest()}


def ensure_dir(directory: Path) -> None:
    """mkdir, and fsync the parent once so the new directory's entry survives a power cut with its files."""
    if not directory.is_dir():
        directory.mkdir()
        fsync_dir(directory.parent)


def commit_shard(out_dir: Path, chunk: Chunk, table: Any, run: dict[str, Any]) -> ShardInfo:
    """Errors part, then shard, then ledger entry: a shard counts only once its sealed entry is in place."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    bad = chunk.bad_rows()
    errors = None
    if bad:
        lines = "".join(json.dumps(b, ensure_ascii=False) + "\n" for b in bad).encode()
        ensure_dir(out_dir / ERRORS_DIR)
        write_atomic(errors_path(out_dir, chunk.index), lambda f: f.write(lines))
        errors = {"size": len(lines), "sha256": hashlib.sha256(lines).hexdigest()}
        crash_point("after_errors")
    else:
        errors_path(out_dir, chunk.index).unlink(missing_ok=True)
    sink = pa.BufferOutputStream()  # serialized once: the bytes written are the bytes hashed
    pq.write_table(table, sink)
    data = sink.getvalue()
    shards = data_dir(out_dir, run)
    ensure_dir(shards)
    write_atomic(shards / shard_name(chunk.index), lambda f: f.write(data), tmp_dir=out_dir)
    crash_point("after_shard")
    meta = json.loads(table.schema.metadata[META_KEY])
    entry = {"format": ENTRY_FORMAT, "run_id": run["run_id"], "fingerprint": run["fingerprint"],
             "index": chunk.index, "meta": meta,
             "shard": {"size": data.size, "sha256": hashlib.sha256(data).hexdigest()}, "errors": errors}
    text = json.dumps({**entry, "seal": _sha256(entry)}, ensure_ascii=False).encode()
    ensure_dir(out_dir / LEDGER_DIR)
    write_atomic(entry_path(out_dir, chunk.index), lambda f: f.write(text))
    crash_point("after_commit")
    return ShardInfo(chunk.index, meta)


def read_entry(path: Path) -> dict[str, Any] | None:
    """A ledger entry whose seal holds, else None (unreadable, edited, bit-flipped)."""
    try:
        entry = json.loads(path.read_bytes())
    except (OSError, ValueError):  # ValueError: bad UTF-8 or JSON, or a damaged number
        return None
    if not isinstance(entry, dict) or entry.get("format") != ENTRY_FORMAT:
        return None
    seal = entry.pop("seal", None)
    return entry if seal == _sha256(entry) else None


def entry_problem(out_dir: Path, index: int, entry: dict[str, Any] | None, run: dict[str, Any]) -> str | None:
    """Why shard ``index`` cannot be trusted, in a few words; None when it verifies."""
    if entry is None or entry.get("index") != index:
        return "its ledger entry is damaged or missing"
    if entry["run_id"] != run["run_id"] or entry["fingerprint"] != run["fingerprint"]:
        return "it belongs to another run"
    got = file_digest(data_dir(out_dir, run) / shard_name(index))
    want = entry["shard"]
    if got is None:
        return "its file is missing"
    if got["size"] != want["size"]:
        return f"it is {got['size']} bytes, {want['size']} were committed: truncated or overwritten"
    if got["sha256"] != want["sha256"]:
        return "its sha256 differs from the committed one: damaged, or copied from another run"
    if entry["errors"] is not None and file_digest(errors_path(out_dir, index)) != entry["errors"]:
        return f"its errors part {ERRORS_DIR}/part-{index:05d}.jsonl is missing or damaged"
    return None


def _index(name: str, pattern: re.Pattern[str]) -> int:
    """The shard index in a file name of ours; -1 for any other name (no shard has it)."""
    found = pattern.fullmatch(name)
    return int(found.group(1)) if found else -1


def _discard(out_dir: Path, shards: Path, index: int) -> None:
    """Entry first: were this interrupted, what is left is an uncommitted shard, which is redone again."""
    for path in (entry_path(out_dir, index), shards / shard_name(index), errors_path(out_dir, index)):
        path.unlink(missing_ok=True)


def verify_shards(out_dir: Path, run: dict[str, Any]) -> dict[int, ShardInfo]:
    """The shards that verify, by index. Deletes the rest (damaged, foreign, uncommitted) with a warning,
    leftover temporary files, and errors parts no verified shard owns, so their rows are redone."""
    folder = data_dir(out_dir, run)
    for stray in {*out_dir.glob(".*.tmp-*"), *out_dir.glob(f"{ERRORS_DIR}/.*.tmp-*"),
                  *out_dir.glob(f"{LEDGER_DIR}/.*.tmp-*"), *folder.glob(".*.tmp-*")}:
        stray.unlink()
    shards: dict[int, ShardInfo] = {}
    for path in sorted(folder.glob("part-*.parquet")):
        index = _index(path.name, _SHARD)
        if path.name != shard_name(index):
            raise JobError(f"{out_dir} has {path.name}, which embed-corpus never writes: the output was edited by "
                           "hand; remove it or use a new --out")
        entry = read_entry(entry_path(out_dir, index))
        problem = entry_problem(out_dir, index, entry, run)
        if problem is None and entry is not None:
            shards[index] = ShardInfo(index, entry["meta"])
            continue
        log.warning("embed-corpus: %s in %s is not trusted, %s; deleted, its rows are redone",
                    path.name, folder, problem)
        _discard(out_dir, folder, index)
    _remove_orphans(out_dir, shards)
    return shards


def _remove_orphans(out_dir: Path, shards: dict[int, ShardInfo]) -> None:
    """Entries and errors parts without a verified shard: what a killed commit or a copy left behind."""
    for path in out_dir.glob(f"{LEDGER_DIR}/part-*.json"):
        index = _index(path.name, _PART)
        if index not in shards and index >= 0:
            log.warning("embed-corpus: %s in %s was committed but is gone; its rows are redone",
                        shard_name(index), out_dir)
        if index not in shards:
            path.unlink()
    for path in out_dir.glob(f"{ERRORS_DIR}/part-*.jsonl"):
        shard = shards.get(_index(path.name, _PART))
        if shard is None or not shard.meta["shard"]["errors"]:
            path.unlink()


def gaps(shards: dict[int, ShardInfo]) -> tuple[list[tuple[Position, int]], Position]:
    """Runs of deleted shards below the last verified one, as (where the run starts, how many chunks),
    and where the rest of the input starts. A run starts where the verified shard before it ended."""
    runs: list[tuple[Position, int]] = []
    last = max(shards, default=-1)
    index = 0
    while index < last:
        if index in shards:
            index += 1
            continue
        first = index
        while index not in shards:
            index += 1
        runs.append((shards[first - 1].end if first else Position(), index - first))
    return runs, shards[last].end if shards else Position()
