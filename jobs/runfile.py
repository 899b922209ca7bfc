"""``_run.json``: what the job is (package, options, inputs, codec), what it has done, and how long it took.

Written when a job starts and rewritten at the end of each run (temp + fsync + rename). A new run of
the same --out compares three sha256 fingerprints with the recorded ones and refuses on any change:
  * manifest: manifest.json of the package (it names every graph file by its own sha256);
  * options:  the options that change the output (jobs.options.COMPARED), with the resolved variant;
  * inputs:   each input file's path, size and sha256 of its first and last 64 KiB.

The format names the layout. Format 2 keeps the shards in ``OUT/data/`` and nothing else there, so every
Parquet reader takes that folder as it is (polars reads every non-empty file under a folder it is given,
whatever its name). Format 1 runs (earlier versions) have their shards beside this file; they resume,
and stay, in that layout.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from polyglot_onnx.errors import JobError
from polyglot_onnx.jobs.shards import write_atomic

RUN_FILE = "_run.json"
FORMAT = "polyglot-onnx-corpus/2"
LEGACY_FORMAT = "polyglot-onnx-corpus/1"  # shards beside _run.json
DATA_DIR = "data"


def data_dir(out_dir: Path, run: Mapping[str, Any]) -> Path:
    """Where a run's shards are: ``data/`` since format 2; the output folder itself in a format 1 run."""
    return out_dir if run.get("format") == LEGACY_FORMAT else out_dir / DATA_DIR


def digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def fingerprints(manifest_sha256: str, compared: dict[str, Any], files: list[dict[str, Any]]) -> dict[str, str]:
    return {"manifest_sha256": manifest_sha256, "options_sha256": digest(compared), "inputs_sha256": digest(files)}


def read_run(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / RUN_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise JobError(f"{path} is unreadable ({err}): use a new --out") from err
    if data.get("format") not in (FORMAT, LEGACY_FORMAT):
        raise JobError(f"{path} is not an embed-corpus run file this version can read: use a new --out")
    return dict(data)


def check_same_job(previous: dict[str, Any], current: dict[str, Any], out_dir: Path) -> None:
    """One line naming what changed since the first run, and what to do about it."""
    old, new = previous["fingerprint"], current["fingerprint"]
    if old["manifest_sha256"] != new["manifest_sha256"]:
        raise JobError(f"{out_dir} was embedded with another package (manifest sha256 {old['manifest_sha256'][:12]} "
                       f"!= {new['manifest_sha256'][:12]}): use a new --out, or delete it to start over")
    if old["options_sha256"] != new["options_sha256"]:
        old_opts, new_opts = previous["options"], current["options"]
        changed = [f"{k}: {old_opts.get(k)!r} -> {new_opts.get(k)!r}" for k in sorted({*old_opts, *new_opts})
                   if old_opts.get(k) != new_opts.get(k)]
        raise JobError(f"{out_dir} was started with other options ({'; '.join(changed)}): rerun with the first "
                       "options, or use a new --out")
    if old["inputs_sha256"] != new["inputs_sha256"]:
        before = {f["path"]: f for f in previous["inputs"]["files"]}
        after = {f["path"]: f for f in current["inputs"]["files"]}
        diff = sorted(set(before) ^ set(after)) or [p for p in after if before[p] != after[p]]
        raise JobError(f"the input changed since {out_dir} was started ({len(diff)} file(s) added, removed or "
                       f"modified, e.g. {diff[0]}): restore it, or use a new --out")


def write_run(out_dir: Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False).encode()
    write_atomic(out_dir / RUN_FILE, lambda f: f.write(text))


def session_record(engine: str, started: float, shards: int, rows: int, settings: dict[str, Any]) -> dict[str, Any]:
    """One run of the job (a resume adds another): its engine, speed settings, work and seconds."""
    return {
        "engine": engine,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 3),
        "shards_committed": shards,
        "rows": rows,
        "settings": settings,
    }


def totals(shard_metas: list[dict[str, Any]]) -> dict[str, int]:
    """Counts summed from the shards' own footers, so they are exact across any number of resumes."""
    keys = ("rows", "embedded", "errors", "tokens", "truncated")
    out = {k: sum(int(m["shard"][k]) for m in shard_metas) for k in keys}
    out["shards"] = len(shard_metas)
    return out
