"""One contender, one task, in its own process: load it, time every workload, append JSON rows.

A process per contender keeps peak RSS and load time its own, and keeps torch's and
onnxruntime's thread pools from competing. Run by the suite as
``python -m polyglot_onnx.bench.worker JOB.json ROWS.jsonl``.
"""

from __future__ import annotations

import json
import resource
import sys
import warnings
from pathlib import Path
from typing import Any

from polyglot_onnx.bench.contenders import ContenderSpec, make_runner
from polyglot_onnx.bench.timing import TimingPolicy, measure, summarize
from polyglot_onnx.bench.workloads import DOCUMENT


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it is not inherited across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)  # kB on Linux


def reset_peak_rss() -> bool:
    """Start a new high-water mark (Linux: '5' to clear_refs), so each row's peak RSS is its own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def run_job(job: dict[str, Any], rows_path: Path) -> None:
    spec = ContenderSpec(**job["contender"])
    policy = TimingPolicy(**job["timing"])
    runner = make_runner(spec, job["task"])
    runner.load()
    base = {**spec.row_fields(), "task": job["task"], "load_s": round(runner.load_seconds, 3),
            "size_mb": round(runner.size_bytes() / 2**20, 1), "load_peak_rss_mb": peak_rss_mb()}
    for wl in job["workloads"]:
        row = {**base, **{k: wl[k] for k in ("kind", "batch", "seq", "tokens")}, "texts": len(wl["texts"])}
        need = runner.memory_need(wl["batch"], max(wl["seq"], wl.get("longest", 0)))
        if need > job["memory_limit"]:
            row["skipped"] = (f"needs a {need / 2**30:.1f} GiB logits tensor, over this run's "
                              f"{job['memory_limit'] / 2**30:.1f} GiB limit")
        else:
            texts, batch = wl["texts"], wl["batch"]
            row["peak_rss_scope"] = "row" if reset_peak_rss() else "process"
            try:
                if wl["kind"] == DOCUMENT:  # one whole long text per call, timed like a fixed row
                    times = measure(lambda t=texts: runner.call_document(t), policy)
                else:
                    row_policy = policy
                    if wl["kind"] != "fixed":  # one timed pass over the whole corpus, after one warm-up batch
                        runner.call(texts[:batch], batch)
                        row_policy = TimingPolicy(warmup=0, min_iters=1, max_iters=1, budget_s=0.0)
                    times = measure(lambda t=texts, b=batch: runner.call(t, b), row_policy)
                row.update(summarize(times, len(texts), wl["tokens"]))
                if wl["kind"] == DOCUMENT:
                    row["ms_per_1k_tokens"] = round(row["p50_ms"] * 1000.0 / wl["tokens"], 3)
            except Exception as err:  # noqa: BLE001 - a failed row is recorded, the run goes on
                row["error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200] if str(err).strip() else ''}"
        row["peak_rss_mb"] = peak_rss_mb()
        with rows_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        shown = row.get("skipped") or row.get("error") or f"p50 {row['p50_ms']:.1f} ms, {row['tok_per_s']:.0f} tok/s (n={row['iters']})"
        print(f"      {spec.label:<16} {job['task']:<9} {wl['kind']:<6} b{wl['batch']:<3} s{wl['seq']:<5} {shown}",
              file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    warnings.filterwarnings("ignore")
    job = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    run_job(job, Path(args[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
