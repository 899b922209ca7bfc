"""``embed_corpus``: plan the job (or check it is the same job), then run an engine and commit its shards.

Engines only turn chunks into vectors. Everything that makes the output exactly-once is here and in
ledger.py and runs in this process: the fixed chunk boundaries, the int8 calibration, the verification
of committed shards on every start (damaged ones are redone, by the local encoder, whatever the engine),
the commit of each shard, and the final counts, summed from the verified shards' own records.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from polyglot_onnx.errors import DependencyError, JobError
from polyglot_onnx.jobs import runfile
from polyglot_onnx.jobs.chunks import Chunk, Position, iter_chunks
from polyglot_onnx.jobs.codecs import Codec, calibrate
from polyglot_onnx.jobs.encode import ChunkEncoder, Encoded, vector_width
from polyglot_onnx.jobs.inputs import (
    Columns,
    check_columns,
    count_rows,
    detect_format,
    fingerprint,
    kept_types,
    resolve_inputs,
)
from polyglot_onnx.jobs.ledger import ShardInfo, commit_shard, gaps, verify_shards
from polyglot_onnx.jobs.options import JobOptions
from polyglot_onnx.jobs.progress import JobProgress
from polyglot_onnx.jobs.shards import ShardColumns, build_table, merge_errors, schema


@dataclass
class Plan:
    """A job ready to run: inputs, the loaded embedder, the run record and where to start."""

    package: Path
    out_dir: Path
    options: JobOptions
    paths: list[Path]
    fmt: str
    embedder: Any
    run: dict[str, Any]
    start: Position  # where the input stands after the last verified shard
    shards: dict[int, ShardInfo]  # verified shards by index; commits add to it
    redo: list[tuple[Position, int]]  # runs of deleted (damaged) shards before ``start``: (start, chunks)
    codec: Codec | None = None
    lock: Any = None  # the open lock file: held while this process runs the job
    kept: dict[str, Any] | None = None  # Arrow type of each --keep-columns column, from the inputs

    @property
    def user_ids(self) -> bool:
        return self.options.id_column is not None

    @property
    def width(self) -> int:
        return vector_width(self.embedder, self.options.output, self.options.dimensions)

    @property
    def input_columns(self) -> Columns:
        o = self.options
        return Columns(o.text_column, o.id_column, o.keep_columns)

    @property
    def shard_columns(self) -> ShardColumns:
        return ShardColumns(self.options.output, self.user_ids, self.options.vector_column,
                            tuple((self.kept or {}).items()))

    def column_types(self, codec: Codec) -> dict[str, str]:
        """The shards' schema as _run.json records it: column name -> Arrow type."""
        return {f.name: str(f.type) for f in schema(codec, self.shard_columns)}

    def provenance(self, encoded: Encoded) -> dict[str, str]:
        """Flat key-value metadata in every shard: what made its vectors, so vectors of different models,
        variants, options or codecs are never mixed unnoticed (polars, DuckDB and pyarrow read these keys)."""
        package, codec = self.run["package"], self.codec
        return {
            "polyglot.model": str(package["model"]),
            "polyglot.variant": str(package["variant"]),
            "polyglot.manifest_sha256": str(package["manifest_sha256"]),
            "polyglot.graph_sha256": str(package.get("graph_sha256", "")),
            "polyglot.provider": encoded.provider or str(package["provider"]),
            "polyglot.options_sha256": str(self.run["fingerprint"]["options_sha256"]),
            "polyglot.dtype": codec.dtype if codec else self.options.dtype,
            "polyglot.dimension": str(self.width),
            "polyglot.vector_column": self.options.vector_column,
            "polyglot.run_id": str(self.run.get("run_id", "")),
        }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("polyglot-onnx", "onnxruntime", "tokenizers", "pyarrow"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def _lock(out: Path) -> Any:
    """An exclusive lock on OUT/.lock: two processes on one job would each redo the other's shards."""
    import fcntl

    handle = open(out / ".lock", "w")  # noqa: SIM115 - held open until the process ends
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        handle.close()
        raise JobError(f"another embed-corpus is running on {out}: wait for it, or stop it first") from err
    return handle


def plan_job(package: str | os.PathLike[str], inputs: Any, out_dir: str | os.PathLike[str], options: JobOptions,
             resume: bool = False) -> Plan:
    """Resolve inputs, load the package, and either start ``out_dir`` or check that it holds this same job."""
    from polyglot_onnx import Embedder
    from polyglot_onnx.manifest import sha256_file

    try:
        import pyarrow  # noqa: F401
    except ImportError as err:
        raise DependencyError("embed-corpus needs the jobs extra: pip install 'polyglot-onnx[jobs]'") from err
    out = Path(out_dir).expanduser()
    paths = resolve_inputs(inputs)
    fmt = detect_format(paths, options.format)
    check_columns(paths, fmt, Columns(options.text_column, options.id_column, options.keep_columns))
    kept = kept_types(paths, fmt, options.keep_columns)
    threads = options.threads if options.engine == "local" else 1
    embedder = Embedder.load(package, provider=options.provider, variant=options.variant, threads=threads)
    encoder = ChunkEncoder(embedder, options)  # validates long_text support early
    compared = {**options.compared(fmt, encoder.pooling), "variant": embedder.variant}
    files = fingerprint(paths)
    manifest = embedder.engine.manifest
    manifest_sha256 = sha256_file(Path(package) / "manifest.json")
    run: dict[str, Any] = {
        "format": runfile.FORMAT,
        "status": "running",
        "package": {"path": str(Path(package).resolve()), "model": manifest.model.name,
                    "architecture": manifest.model.architecture, "variant": embedder.variant,
                    "graph_sha256": _graph_sha256(embedder),
                    "dimension": vector_width(embedder, options.output, options.dimensions),
                    "provider": embedder.provider, "manifest_sha256": manifest_sha256,
                    "prompt": encoder.prompt},  # what was prepended to every text (explicit, named or default)
        "options": compared,
        "inputs": {"format": fmt, "files": files},
        "fingerprint": runfile.fingerprints(manifest_sha256, compared, files),
        "run_id": uuid.uuid4().hex,  # names this output's shards: a shard of another run is never trusted
        "codec": None,
        "columns": None,
        "counts": None,
        "sessions": [],
        "versions": _versions(),
    }
    previous = runfile.read_run(out) if out.is_dir() else None
    if previous is None:
        if resume:
            raise JobError(f"nothing to resume in {out} (no {runfile.RUN_FILE}): run without --resume to start")
        if out.is_dir() and any(not p.name.startswith(".") for p in out.iterdir()):  # ours: .lock, .*.tmp-*
            raise JobError(f"{out} is not empty and holds no embed-corpus run: choose an empty or new --out")
        out.mkdir(parents=True, exist_ok=True)
    else:
        runfile.check_same_job(previous, run, out)
        run["codec"], run["sessions"] = previous.get("codec"), previous.get("sessions", [])
        run["format"] = previous["format"]  # a format 1 run keeps its shards where they are
        # A run started before shards had ledger entries gets a new id: its unverifiable shards are redone.
        run["run_id"] = previous.get("run_id", run["run_id"])
        if previous.get("status") == "complete":
            run = previous
    lock = _lock(out)
    try:
        shards, redo, start = _verified(out, run)
        codec = Codec.from_metadata(run["codec"]) if run["codec"] else None
        if run["status"] != "complete":
            runfile.write_run(out, run)
    except BaseException:
        lock.close()
        raise
    return Plan(Path(package), out, options, paths, fmt, embedder, run, start, shards, redo, codec, lock=lock,
                kept=kept)


def _graph_sha256(embedder: Any) -> str:
    """The sha256 the manifest records for the variant's graph file ("" if it records none)."""
    files = getattr(embedder.engine.package.variant, "files", None) or []
    return str(files[0].sha256) if files else ""


def _verified(out: Path, run: dict[str, Any]) -> tuple[dict[int, ShardInfo], list[tuple[Position, int]], Position]:
    """Verify every committed shard (hashing it), even of a finished run: one found damaged is deleted, the
    run is marked running again, and its rows are redone. A run finished by a version without ledger
    entries (no run_id) is left as it is: there is nothing to verify it against."""
    if run["status"] == "complete" and "run_id" not in run:
        return {}, [], Position()
    shards = verify_shards(out, run)  # also deletes the temporary files of a run killed mid-write
    if run["status"] == "complete" and len(shards) != run["counts"]["shards"]:
        run["status"] = "running"
    redo, start = gaps(shards)
    return shards, redo, start


class Committer:
    """Commits (chunk, encoded) pairs in chunk order: calibrates once, checks bad rows, writes the shard."""

    def __init__(self, plan: Plan, progress: JobProgress) -> None:
        self.plan = plan
        self.progress = progress
        self.committed = 0
        self.rows = 0

    def _calibrate(self, encoded: Encoded) -> Codec:
        plan = self.plan
        if plan.options.output == "sentence":
            sample = encoded.vectors
        else:
            parts = [r.embeddings for r in encoded.vectors]
            sample = np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)
        codec = calibrate(plan.options.dtype, plan.width, sample)
        plan.run["codec"] = codec.metadata()
        plan.run["columns"] = plan.column_types(codec)
        runfile.write_run(plan.out_dir, plan.run)  # persisted before the first shard that uses it
        return codec

    def commit(self, chunk: Chunk, encoded: Encoded) -> None:
        plan = self.plan
        bad = chunk.bad_rows()
        if bad and plan.options.fail_on_error:
            first = bad[0]
            raise JobError(f"row {first['row']} of the input is bad ({first['reason']}) at {Path(first['file']).name} "
                           f"line {first['line']} and --fail-on-error is set: fix the input, or drop --fail-on-error "
                           "to log bad rows to _errors.jsonl")
        if plan.codec is None:
            plan.codec = self._calibrate(encoded)
        meta = {
            "run": plan.run["fingerprint"],
            "run_id": plan.run["run_id"],
            "codec": plan.codec.metadata(),
            "shard": {"index": chunk.index, "first_row": chunk.first_row, "rows": len(chunk),
                      "embedded": len(chunk) - len(bad), "errors": len(bad), "tokens": int(encoded.n_tokens.sum()),
                      "truncated": int(encoded.truncated.sum()), "end": chunk.end.__dict__},
        }
        table = build_table(chunk, encoded, plan.codec, plan.shard_columns, meta, plan.provenance(encoded))
        plan.shards[chunk.index] = commit_shard(plan.out_dir, chunk, table, plan.run)
        self.committed += 1
        self.rows += len(chunk)


def encode_chunks(plan: Plan, progress: JobProgress, start: Position | None = None, count: int | None = None
                  ) -> Iterator[tuple[Chunk, Encoded]]:
    """The local engine: stream ``count`` chunks (default: all) from ``start`` (default: after the last
    verified shard) and encode each in this process."""
    encoder = ChunkEncoder(plan.embedder, plan.options)
    chunks = iter_chunks(plan.paths, plan.fmt, plan.input_columns, plan.options.shard_size,
                         plan.start if start is None else start)
    for chunk in islice(chunks, count):
        texts = [t for t in chunk.texts if t is not None]
        encoded = encoder.encode(texts, on_batch=progress.update)
        progress.update(len(chunk) - len(texts), 0)  # bad rows count as done
        yield chunk, encoded


def redo_chunks(plan: Plan, progress: JobProgress) -> Iterator[tuple[Chunk, Encoded]]:
    """The chunks of shards deleted as damaged, re-read from where the verified shard before each run of
    them ended, and encoded in this process whatever the engine (damage is rare; Ray resumes at the end)."""
    for start, count in plan.redo:
        yield from encode_chunks(plan, progress, start, count)


def run_job(plan: Plan) -> dict[str, Any]:
    """Run the plan's engine to the end of the input, then record counts, timings and status."""
    try:
        return plan.run if plan.run["status"] == "complete" else _run(plan)
    finally:
        plan.lock.close()


def _run(plan: Plan) -> dict[str, Any]:
    started = time.time()
    total = count_rows(plan.paths, plan.fmt)
    enabled = None if plan.options.show_progress else False
    progress = JobProgress(total, initial=sum(s.rows for s in plan.shards.values()), enabled=enabled)
    committer = Committer(plan, progress)
    try:
        if plan.options.engine == "ray":
            from polyglot_onnx.jobs.ray_engine import ray_chunks

            rest = ray_chunks(plan, progress)
        else:
            rest = encode_chunks(plan, progress)
        for pairs in (redo_chunks(plan, progress), rest):
            for chunk, encoded in pairs:
                committer.commit(chunk, encoded)
    finally:
        progress.close()
    return finish(plan, started, committer)


def finish(plan: Plan, started: float, committer: Committer) -> dict[str, Any]:
    shards = [plan.shards[k] for k in sorted(plan.shards)]
    if [s.index for s in shards] != list(range(len(shards))):
        missing = min(set(range(max(plan.shards) + 1)) - set(plan.shards))
        raise JobError(f"{plan.out_dir}: shard {missing} is missing after the run: the output was edited while the "
                       "job ran; rerun the same command to redo it")
    if plan.codec is None:  # an empty input: still a valid, complete run
        plan.codec = calibrate(plan.options.dtype, plan.width, np.zeros((0, 1)))
        plan.run["codec"] = plan.codec.metadata()
    plan.run["columns"] = plan.column_types(plan.codec)
    counts = runfile.totals([s.meta for s in shards])
    merged = merge_errors(plan.out_dir)
    if merged != counts["errors"]:
        raise JobError(f"{plan.out_dir}: {merged} rows in _errors/ but {counts['errors']} counted in the shards: "
                       "the output was edited by hand; use a new --out")
    o = plan.options
    budget = o.batch_tokens(plan.embedder.model.hidden_size)
    settings = {"threads": o.threads, "provider": plan.embedder.provider, "max_batch_tokens": budget}
    if o.engine == "ray":
        settings.update(actors=o.actors, cpus_per_actor=o.cpus_per_actor, ray_address=o.ray_address)
    plan.run["sessions"].append(runfile.session_record(o.engine, started, committer.committed, committer.rows,
                                                       settings))
    seconds = sum(s["seconds"] for s in plan.run["sessions"])
    plan.run.update(status="complete", counts=counts,
                    timings={"seconds": round(seconds, 3), "docs_per_s": round(counts["rows"] / max(seconds, 1e-9), 2),
                             "tokens_per_s": round(counts["tokens"] / max(seconds, 1e-9), 1)})
    runfile.write_run(plan.out_dir, plan.run)
    return plan.run


def embed_corpus(package: str | os.PathLike[str], inputs: Any, out_dir: str | os.PathLike[str],
                 options: JobOptions | None = None, resume: bool = False) -> dict[str, Any]:
    """Embed every row of ``inputs`` into Parquet shards under ``out_dir``; re-running resumes. Returns _run.json."""
    return run_job(plan_job(package, inputs, out_dir, options or JobOptions(), resume))
