"""A hostile corpus job: poison rows of every kind, SIGKILLs at random moments, damaged shards; exactly once?

    python benchmarks/hostile_corpus.py [--package DIR] [--rows 10000] [--poison 0.01] [--kills 5] [--seed 0]
        [--shard-size 500] [--threads 2] [--out benchmarks/results/hostile]

Builds a JSONL corpus of --rows rows (seeded) in which a --poison fraction are poison rows, as many of
each kind below, at random lines. Runs ``polyglot-onnx embed-corpus`` once undisturbed (the reference),
then runs it again into a new --out and SIGKILLs it from outside at --kills random moments, resuming
after each (each delay: the start-up time plus a uniform draw over the time the rest of the work should
take, so kills land while rows are read, encoded and committed). Before the last resume it damages two
committed shards (flipped bytes in one, the last one cut short), which the resume must find and redo.
Then it checks: every good row exactly once, vectors equal to the reference's bit for bit, every poison
row in _errors.jsonl at its line with its reason, no traceback. Writes corpus.json and corpus.md.
Without --package it builds the tests' tiny-bert fixture (build_tiny_bert + export_package, as conftest.py).
Target (issue 25, part 5): 10,000 rows, 1% poison of every kind, 5 kills: no duplicate, none missing,
every poison row found.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "data" / "multilingual.txt"
sys.path.insert(0, str(ROOT / "tests"))  # the hostile rows live beside the tests that check them
from hostile_rows import POISON


def build_corpus(path: Path, rows: int, poison: float, seed: int) -> tuple[list[str], dict[int, tuple[str, str]]]:
    """The corpus; returns the good ids in order and, by 1-based line, each poison row's (kind, reason)."""
    rng = random.Random(seed)
    sentences = [s for s in CORPUS.read_text(encoding="utf-8").splitlines() if s.strip()]
    n_poison = round(rows * poison)
    poisoned = {line: POISON[i % len(POISON)] for i, line in enumerate(sorted(rng.sample(range(1, rows + 1),
                                                                                       n_poison)))}
    ids: list[str] = []
    with open(path, "wb") as f:
        for line in range(1, rows + 1):
            if line in poisoned:
                f.write(poisoned[line][1] + b"\n")
                continue
            text = " ".join(rng.choice(sentences) for _ in range(1 if rng.random() < 0.7 else rng.randint(2, 8)))
            ids.append(f"d{line}")
            f.write(json.dumps({"doc": f"d{line}", "text": text}, ensure_ascii=False).encode() + b"\n")
    return ids, {line: (kind, reason) for line, (kind, _, reason) in poisoned.items()}


def tiny_package(work: Path) -> Path:
    from polyglot_onnx.export import ExportOptions, export_package

    try:  # where tests/conftest.py finds it; export.tiny before the per-family modules
        from polyglot_onnx.export.families.bert import build_tiny_bert
    except ImportError:
        from polyglot_onnx.export.tiny import build_tiny_bert  # type: ignore[attr-defined,no-redef]

    checkpoint = build_tiny_bert(work / "checkpoint", CORPUS)
    export_package(str(checkpoint), work / "tiny-bert", ExportOptions(show_progress=False))
    return work / "tiny-bert"


def command(package: Path, corpus: Path, out: Path, args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "polyglot_onnx", "embed-corpus", str(package), "--input", str(corpus), "--out",
            str(out), "--id-column", "doc", "--shard-size", str(args.shard_size), "--threads", str(args.threads),
            "--quiet"]


def committed_rows(out: Path) -> int:
    rows = 0
    for entry in out.glob("_ledger/part-*.json"):
        try:
            rows += json.loads(entry.read_bytes())["meta"]["shard"]["rows"]
        except (OSError, ValueError, KeyError):
            continue
    return rows


def leftovers(out: Path) -> dict[str, int]:
    """What a kill left behind: committed shards, shards without ledger entry, temporary files."""
    entries = {p.stem for p in out.glob("_ledger/part-*.json")}
    shards = {p.stem for p in (out / "data").glob("part-*.parquet")}
    return {"committed_shards": len(entries), "uncommitted_shards": len(shards - entries),
            "temporary_files": len(list(out.glob("**/.*.tmp-*")))}


def killed_run(cmd: list[str], delay: float) -> tuple[bool, float, str]:
    """Start the job, SIGKILL it after ``delay`` s; (landed, seconds run, stderr). Not landed: it finished first."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
    stderr = proc.communicate()[1]
    return proc.returncode == -signal.SIGKILL, time.perf_counter() - started, stderr


def damage(out: Path, rng: random.Random) -> list[str]:
    """Flip a byte in one committed shard and cut the last one short: the next start must redo both."""
    shards = sorted((out / "data").glob("part-*.parquet"))
    if len(shards) < 2:
        return []
    flipped, cut = rng.choice(shards[:-1]), shards[-1]
    data = bytearray(flipped.read_bytes())
    data[rng.randrange(len(data))] ^= 0xFF
    flipped.write_bytes(bytes(data))
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    return [flipped.name, cut.name]


def run_once(cmd: list[str]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return res, time.perf_counter() - started


def check(out: Path, ref: Path, ids: list[str], expected: dict[int, tuple[str, str]]) -> dict[str, Any]:
    import pyarrow.parquet as pq

    got, want = pq.read_table(out), pq.read_table(ref)
    seen = got.column("id").to_pylist()
    counts = Counter(seen)
    errors = [json.loads(line) for line in (out / "_errors.jsonl").read_text(encoding="utf-8").splitlines()]
    by_line = {e["line"]: e for e in errors}
    found = [line for line, (_, reason) in expected.items() if reason in by_line.get(line, {}).get("reason", "")]
    by_kind = {kind: [0, 0] for kind, _, _ in POISON}
    for line, (kind, _) in expected.items():
        by_kind[kind][0] += 1
        by_kind[kind][1] += line in found
    return {
        "good_rows": len(ids), "rows_out": len(seen),
        "duplicates": sum(c - 1 for c in counts.values() if c > 1), "missing": len(set(ids) - set(counts)),
        "unexpected": len(set(counts) - set(ids)), "in_order": seen == ids,
        "vectors_equal_reference": got.drop(["id"]).equals(want.drop(["id"])) and seen == want.column("id").to_pylist(),
        "poison_rows": len(expected), "poison_rows_found": len(found), "error_rows": len(errors),
        "poison_found_by_kind": {kind: {"rows": n, "found": f} for kind, (n, f) in by_kind.items()},
        "errors_file_equal_reference": (out / "_errors.jsonl").read_bytes() == (ref / "_errors.jsonl").read_bytes(),
    }


def kill_series(cmd: list[str], out: Path, args: argparse.Namespace, ref_seconds: float, startup: float
                ) -> tuple[list[dict[str, Any]], int, float, list[str]]:
    """--kills SIGKILLs in a row, each resumed by the next run; (kills, misses, seconds, stderrs). A run that
    finishes before its kill starts the series over (a fresh --out), so every kill counted hits the output
    that is checked. The delay is the start-up time plus a uniform draw over the time the rest of the work
    should take, so kills land while rows are read, encoded and committed."""
    rng = random.Random(args.seed + 1)
    rate = args.rows / max(ref_seconds - startup, 1e-3)
    kills: list[dict[str, Any]] = []
    missed, seconds, stderrs = 0, 0.0, []
    while len(kills) < args.kills and missed <= 3:
        delay = round(startup + rng.uniform(0.0, 0.9 * (args.rows - committed_rows(out)) / rate), 2)
        landed, took, stderr = killed_run(cmd, delay)
        seconds += took
        stderrs.append(stderr)
        if landed:
            kills.append({"delay_s": delay, **leftovers(out)})
        else:
            missed, kills = missed + 1, []
            shutil.rmtree(out, ignore_errors=True)
    return kills, missed, seconds, stderrs


def machine() -> dict[str, Any]:
    from polyglot_onnx.bench.machine import cpu_model, versions

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "versions": versions()}


def markdown(result: dict[str, Any]) -> str:
    c = result["checks"]
    kills = "; ".join(f"{k['delay_s']} s ({k['committed_shards']} committed, {k['uncommitted_shards']} shard without "
                      f"entry, {k['temporary_files']} tmp)" for k in result["kills"])
    rows = [
        ("rows", f"{result['rows']:,} ({c['good_rows']:,} good)"),
        ("poison rows", f"{c['poison_rows']} of {len(result['poison_by_kind'])} kinds (below)"),
        ("SIGKILLs landed", f"{result['kills_landed']} at {kills}"),
        ("kills that missed (job done first: series restarted)", str(result["kills_missed"])),
        ("damaged shards before the last resume", ", ".join(result["damaged"]) or "none"),
        ("shards redone with a warning", ", ".join(result["redone_with_warning"]) or "none"),
        ("duplicates", str(c["duplicates"])),
        ("missing", str(c["missing"])),
        ("good rows out, in input order", f"{c['rows_out']:,}, {c['in_order']}"),
        ("vectors equal to an uninterrupted run (bit for bit)", str(c["vectors_equal_reference"])),
        ("poison rows found in _errors.jsonl at their line", f"{c['poison_rows_found']} / {c['poison_rows']}"),
        ("_errors.jsonl equal to the uninterrupted run's", str(c["errors_file_equal_reference"])),
        ("tracebacks", str(result["tracebacks"])),
        ("wall time: uninterrupted run", f"{result['reference_seconds']:.1f} s (start-up {result['startup_seconds']:.1f} s)"),
        ("wall time: killed runs + final resume", f"{result['hostile_seconds']:.1f} s"),
        ("target met", str(result["target_met"])),
    ]
    lines = ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    kinds = ["| poison kind | rows | in _errors.jsonl at their line |", "|---|---:|---:|",
             *(f"| {k} | {v['rows']} | {v['found']} |" for k, v in c.get("poison_found_by_kind", {}).items())]
    return (f"# Hostile corpus job\n\n{chr(10).join(lines)}\n\n{chr(10).join(kinds)}\n\nCommand: `{result['command']}` (seed {result['seed']}, "
            f"shard size {result['shard_size']}, {result['threads']} threads, package: {result['package']}).\n"
            f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores.\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--package", type=Path, default=None, help="default: the tests' tiny-bert fixture, built here")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--poison", type=float, default=0.01)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard-size", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "hostile")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        work = Path(tmp)
        package = args.package or tiny_package(work)
        corpus = work / "corpus.jsonl"
        ids, expected = build_corpus(corpus, args.rows, args.poison, args.seed)
        ref, out = work / "ref", work / "out"
        res, ref_seconds = run_once(command(package, corpus, ref, args))
        if res.returncode != 0:
            print(res.stderr[-3000:], file=sys.stderr)
            return 1
        _, startup = run_once(command(package, corpus, ref, args))  # a finished job: start-up and verification
        cmd = command(package, corpus, out, args)
        kills, missed, hostile_seconds, stderrs = kill_series(cmd, out, args, ref_seconds, startup)
        damaged = damage(out, random.Random(args.seed + 2)) if out.exists() else []
        res, last = run_once(cmd)
        hostile_seconds += last
        stderrs.append(res.stderr)
        redone = sorted(line.split()[1] for line in res.stderr.splitlines() if "rows are redone" in line)
        checks = check(out, ref, ids, expected) if res.returncode == 0 else {}
        result = {
            "rows": args.rows, "seed": args.seed, "shard_size": args.shard_size, "threads": args.threads,
            "package": str(args.package.name) if args.package else "tiny-bert test fixture",
            "poison_by_kind": dict(Counter(kind for kind, _ in expected.values())),
            "kills": kills, "kills_landed": len(kills), "kills_missed": missed,
            "damaged": damaged, "redone_with_warning": redone, "final_returncode": res.returncode,
            "tracebacks": sum("Traceback" in s for s in stderrs),
            "checks": checks, "reference_seconds": round(ref_seconds, 2), "startup_seconds": round(startup, 2),
            "hostile_seconds": round(hostile_seconds, 2),
            "command": "python -m polyglot_onnx embed-corpus PACKAGE --input corpus.jsonl --out OUT --id-column doc "
                       f"--shard-size {args.shard_size} --threads {args.threads} --quiet",
            "machine": machine(),
        }
        result["target_met"] = bool(
            checks and len(kills) == args.kills and checks["duplicates"] == 0 and checks["missing"] == 0
            and checks["poison_rows_found"] == checks["poison_rows"] and checks["vectors_equal_reference"]
            and not result["tracebacks"] and sorted(damaged) == redone)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "corpus.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (args.out / "corpus.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    return 0 if result["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
