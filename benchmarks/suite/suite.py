"""``run_bench``: prepare every contender from one checkpoint, time them in one run, write the report."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyglot_onnx.bench import flops as fl
from polyglot_onnx.bench.contenders import ContenderSpec
from polyglot_onnx.bench.machine import machine_facts, measure_peaks, versions
from polyglot_onnx.bench.targets import evaluate, speedup
from polyglot_onnx.bench.timing import TimingPolicy
from polyglot_onnx.bench.workloads import (
    CORPUS,
    DOCUMENT,
    EMBED,
    FILL_MASK,
    TASKS,
    TextCutter,
    Workload,
    corpus_workload,
    document_workloads,
    fixed_workloads,
    workload_key,
)
from polyglot_onnx.errors import BenchError
from polyglot_onnx.progress import Progress

CONTENDERS = ("torch", "optimum", "ortopt", "polyglot", "dense")
# "ortopt": onnxruntime.transformers.optimizer run directly (Optimum O4's graph without an Optimum install).
# "dense": the same polyglot package exported with --dense-attention (ModernBERT's local layers as
# dense attention under a band mask), to measure what banded attention buys in one run.
PACKAGE_FAMILIES = ("polyglot", "dense")
GRAPH_FAMILIES = ("optimum", "ortopt")  # one ONNX file per task, driven by OptimumRunner
# Variants per family and provider when the command line names none.
DEFAULT_VARIANTS: dict[tuple[str, str], tuple[str, ...]] = {
    ("torch", "cpu"): ("fp32",),
    ("torch", "cuda"): ("fp16",),
    ("optimum", "cpu"): ("fp32", "O2", "int8"),
    ("optimum", "cuda"): ("O4",),
    ("ortopt", "cpu"): ("fp32",),
    ("ortopt", "cuda"): ("fp16",),
}


def _package_variants(provider: str) -> tuple[str, ...]:
    """A polyglot package's default rows: the variant auto prefers there (quantize/recipes.py), and fp32 on CPU."""
    from polyglot_onnx.quantize.recipes import best_for

    best = best_for(provider)
    return (("fp32",) if provider == "cpu" else ()) + ((best,) if best else ())


for _family in PACKAGE_FAMILIES:
    for _provider in ("cpu", "cuda"):
        DEFAULT_VARIANTS[(_family, _provider)] = _package_variants(_provider)
BASE_SEQS = (32, 128, 512)
LONG_SEQS = (2048, 8192)  # models with 8192 positions (mmBERT), at batch 1 only
LONG_FROM = 512
DOCUMENT_SEQS = (512, 2048, 8192)  # cost per 1,000 tokens of one whole document (polyglot embed, windowed if longer)


@dataclass(frozen=True)
class BenchOptions:
    model: str
    out: Path
    random_weights: bool = False
    tasks: tuple[str, ...] = TASKS
    contenders: tuple[str, ...] = CONTENDERS
    variants: dict[str, tuple[str, ...]] = field(default_factory=dict)  # family -> variants (overrides defaults)
    batches: tuple[int, ...] = (1, 32)
    seqs: tuple[int, ...] | None = None  # None: 32/128/512, plus 2048/8192 at batch 1 where the model allows
    corpus_size: int = 2000
    corpus_batch: int = 32
    document_seqs: tuple[int, ...] = DOCUMENT_SEQS  # () leaves the document rows out
    provider: str = "cpu"
    threads: int = 2
    timing: TimingPolicy = field(default_factory=TimingPolicy)
    memory_limit_gb: float = 8.0
    optimum_env: Path | None = None
    work: Path | None = None  # checkpoints, packages and Optimum builds (default OUT/work); reused across runs
    show_progress: bool = True


def _check(options: BenchOptions) -> None:
    for task in options.tasks:
        if task not in TASKS:
            raise BenchError(f"unknown task {task!r}: choose from {', '.join(TASKS)}")
    for family in (*options.contenders, *options.variants):
        if family not in CONTENDERS:
            raise BenchError(f"unknown contender {family!r}: choose from {', '.join(CONTENDERS)}")
    if options.provider not in ("cpu", "cuda"):
        raise BenchError(f"unknown provider {options.provider!r}: choose cpu or cuda")
    if any(b < 1 for b in options.batches) or any(s < 4 for s in (*(options.seqs or ()), *options.document_seqs)):
        raise BenchError("batch sizes must be >= 1 and sequence lengths >= 4")
    if options.corpus_size < 0:
        raise BenchError("--corpus-size must be >= 0 (0 leaves the corpus workload out)")


def variants_of(options: BenchOptions, family: str) -> tuple[str, ...]:
    return options.variants.get(family) or DEFAULT_VARIANTS[(family, options.provider)]


def plan_workloads(options: BenchOptions, cutter: TextCutter, max_length: int) -> list[Workload]:
    """Fixed rows (sequences above 512 at batch 1 only: one 8192-token text is already a large batch), then the corpus."""
    seqs = [s for s in (options.seqs or BASE_SEQS + LONG_SEQS) if s <= max_length]
    short = [s for s in seqs if s <= LONG_FROM]
    long = [s for s in seqs if s > LONG_FROM]
    rows = fixed_workloads(cutter, list(options.tasks), list(options.batches), short)
    if long:
        rows += fixed_workloads(cutter, list(options.tasks), [1], long)
    if EMBED in options.tasks and options.document_seqs:
        rows += document_workloads(cutter, list(options.document_seqs))
    if EMBED in options.tasks and options.corpus_size:
        rows.append(corpus_workload(cutter, options.corpus_size, options.corpus_batch, high=min(400, max_length)))
    return rows


def _specs(options: BenchOptions, checkpoint: Path, packages: dict[str, Path],
           graphs_of: dict[str, dict[str, dict[str, str]]]) -> list[ContenderSpec]:
    specs = []
    for family in options.contenders:
        for variant in variants_of(options, family):
            graphs = ({"package": str(packages[family])} if family in packages
                      else graphs_of.get(family, {}).get(variant, {}))
            specs.append(ContenderSpec(family, variant, options.provider, options.threads, str(checkpoint), graphs))
    return specs


def _run_worker(job: dict[str, Any], rows_path: Path, work: Path) -> None:
    """Run one worker process, streaming its per-row progress lines as they come."""
    job_path = work / "job.json"
    job_path.write_text(json.dumps(job), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": str(job["contender"]["threads"]), "TOKENIZERS_PARALLELISM": "true"}
    tail: list[str] = []
    with subprocess.Popen([sys.executable, "-m", "polyglot_onnx.bench.worker", str(job_path), str(rows_path)],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            tail = (tail + [line.rstrip()])[-50:]
            if line.startswith("      "):  # the worker's row lines; library chatter stays in the tail
                print(line, end="", file=sys.stderr, flush=True)
    if proc.returncode != 0:
        lines = [ln for ln in tail if ln.strip()]
        raise BenchError(f"the {job['contender']['family']}:{job['contender']['variant']} worker failed on "
                         f"{job['task']} ({lines[-1] if lines else 'no output'}): rerun with fewer rows to narrow it down")


def _record_missing(spec: ContenderSpec, workloads: list[Workload], rows_path: Path, error: str) -> None:
    """Rows for the workloads a failed worker never reached, each carrying the failure."""
    done = {workload_key(r["task"], r["kind"], r["batch"], r["seq"]) for r in _read_rows(rows_path)
            if r["label"] == spec.label}
    with rows_path.open("a", encoding="utf-8") as fh:
        for w in workloads:
            if w.key not in done:
                fh.write(json.dumps({**spec.row_fields(), "task": w.task, "kind": w.kind, "batch": w.batch,
                                     "seq": w.seq, "tokens": w.tokens, "texts": len(w.texts), "error": error}) + "\n")


def _read_rows(rows_path: Path) -> list[dict[str, Any]]:
    if not rows_path.is_file():
        return []
    return [json.loads(line) for line in rows_path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _peak_ratio(row: dict[str, Any], peaks: dict[str, float]) -> float | None:
    """Share of the measured peak the row's achieved rate is: int8 / fp32 MatMul on CPU, fp16 GEMM on CUDA
    (fp32 and int8 rows on CUDA have no peak of their own here)."""
    if row["provider"] == "cuda":
        fp16 = row["variant"] in ("fp16", "O4") and peaks.get("fp16_peak_tflops")
        return round(row["gflops"] / (peaks["fp16_peak_tflops"] * 1e3), 4) if fp16 else None
    peak = peaks["int8_peak_gops"] if row["variant"].startswith("int8") else peaks["fp32_peak_gflops"]
    return round(row["gflops"] / peak, 4)


def _derive(rows: list[dict[str, Any]], shape: fl.Shape, lengths: dict[str, list[int]], peaks: dict[str, float]) -> None:
    """Achieved GFLOP/s, share of the measured peak, speed-ups against every other contender."""
    for row in rows:
        if "p50_ms" not in row or row["kind"] == DOCUMENT:  # windows do more work than the document's FLOPs
            continue
        seconds = (row["p50_ms"] if row["kind"] == "fixed" else row["mean_ms"]) / 1000.0
        key = workload_key(row["task"], row["kind"], row["batch"], row["seq"])
        row["gflops"] = round(fl.call_flops(shape, row["task"], lengths[key]) / seconds / 1e9, 3)
        row["peak_ratio"] = _peak_ratio(row, peaks)
    for row in rows:
        if "p50_ms" not in row:
            continue
        row["speedup_vs"] = {
            other["label"]: round(speedup(row, other), 3)
            for other in rows
            if other is not row and "p50_ms" in other and other["label"] != row["label"]
            and (other["task"], other["kind"], other["batch"], other["seq"]) == (row["task"], row["kind"], row["batch"], row["seq"])
        }


def published_command(argv: list[str]) -> str:
    """The command as it goes into committed results: the scratch folder as WORK, no absolute paths."""
    words = [Path(argv[0]).name]
    for prev, word in itertools.pairwise(argv):
        words.append("WORK" if prev == "--work" else Path(word).name if Path(word).is_absolute() else word)
    return " ".join(words)


def run_bench(options: BenchOptions) -> dict[str, Any]:
    """Run the whole suite; returns the summary (rows, targets, paths) that report.write also saves."""
    from polyglot_onnx.bench.prepare import (
        ensure_optimum,
        ensure_ortopt,
        ensure_package,
        mask_token,
        resolve_checkpoint,
    )
    from polyglot_onnx.bench.report import write_report

    _check(options)
    out = options.out.expanduser().resolve()
    work = (options.work or out / "work").expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    progress = Progress(total=5, enabled=options.show_progress)
    with progress.step(f"checkpoint {options.model}"):
        name, checkpoint = resolve_checkpoint(options.model, options.random_weights, work)
    shape = fl.read_shape(checkpoint)
    packages: dict[str, Path] = {}
    graphs_of: dict[str, dict[str, dict[str, str]]] = {}  # family -> variant -> task -> ONNX file
    with progress.step("building the contenders' models"):
        for family in (f for f in PACKAGE_FAMILIES if f in options.contenders):
            suffix = "" if family == "polyglot" else f"-{family}"
            packages[family] = ensure_package(checkpoint, work / "packages" / f"{name}{suffix}",
                                              list(variants_of(options, family)), options.threads,
                                              options.show_progress, banded=family == "polyglot")
        if "optimum" in options.contenders:
            graphs_of["optimum"] = ensure_optimum(checkpoint, work, list(options.tasks),
                                                  list(variants_of(options, "optimum")), options.optimum_env, progress)
        if "ortopt" in options.contenders:
            graphs_of["ortopt"] = ensure_ortopt(checkpoint, work, list(options.tasks),
                                                list(variants_of(options, "ortopt")), options.provider, progress)
    with progress.step(f"measuring this machine's MatMul peaks ({options.threads} threads)"):
        peaks = measure_peaks(options.threads, provider=options.provider)
        progress.info(f"fp32 {peaks['fp32_peak_gflops']} GFLOP/s, int8 {peaks['int8_peak_gops']} GOP/s (2048 cube)"
                      + (f", GPU fp16 {peaks['fp16_peak_tflops']} TFLOP/s (8192 cube)" if "fp16_peak_tflops" in peaks
                         else ""))
    config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    max_length = int(config.get("max_position_embeddings", 512))
    cutter = TextCutter(checkpoint / "tokenizer.json", mask_token(checkpoint))
    workloads = plan_workloads(options, cutter, max_length)
    lengths = {w.key: w.lengths for w in workloads}
    specs = _specs(options, checkpoint, packages, graphs_of)
    rows_path = work / "rows.jsonl"
    rows_path.unlink(missing_ok=True)
    with progress.step(f"timing {len(specs)} contenders x {len(workloads)} workloads"), \
            progress.bar(len(specs) * len(options.tasks), "bench", unit="contender-task") as bar:
        for spec in specs:
            for task in options.tasks:
                bar.update(1)
                # only polyglot embeds a document whole; the others would truncate it
                mine = [w for w in workloads if w.task == task and (w.kind != DOCUMENT or spec.family == "polyglot")]
                if not mine:
                    continue
                job = {"contender": spec.as_dict(), "task": task, "timing": options.timing.__dict__,
                       "memory_limit": int(options.memory_limit_gb * 2**30),
                       "workloads": [{"kind": w.kind, "batch": w.batch, "seq": w.seq, "tokens": w.tokens,
                                      "longest": max(w.lengths), "texts": w.texts} for w in mine]}
                if spec.family in GRAPH_FAMILIES and task not in spec.graphs:
                    _record_missing(spec, mine, rows_path,
                                    f"the {spec.family} route could not build its {spec.variant} graph for {task}")
                    continue
                try:
                    _run_worker(job, rows_path, work)
                except BenchError as err:  # a crashed worker (killed for memory, say) costs its rows, not the run
                    progress.info(str(err))
                    _record_missing(spec, mine, rows_path, str(err))
    rows = _read_rows(rows_path)
    _derive(rows, shape, lengths, peaks)
    context = {"model": name, "checkpoint": Path(checkpoint).name, "random_weights": options.random_weights,
               "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               "machine": machine_facts(options.threads, options.provider), "versions": versions(), "peaks": peaks,
               "timing": options.timing.__dict__, "command": published_command(sys.argv), "max_length": max_length,
               "corpus": next(({"texts": len(w.texts), "shortest": min(w.lengths), "longest": max(w.lengths),
                                "tokens": w.tokens} for w in workloads if w.kind == CORPUS), None)}
    for row in rows:
        row.update(model=name, machine=context["machine"], versions=context["versions"])
    summary = {"context": context, "rows": rows, "targets": evaluate(rows, name)}
    with progress.step(f"writing {out}"):
        write_report(summary, out)
    return summary


__all__ = ["CORPUS", "FILL_MASK", "BenchOptions", "run_bench"]
