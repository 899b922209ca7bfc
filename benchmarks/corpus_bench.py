"""Corpus embedding throughput and memory: the job's engines against the in-process ceiling and PyTorch.

    python benchmarks/corpus_bench.py PACKAGE|tiny-bert --docs 1000000 [--checkpoint DIR] [--threads 2]
        [--contenders local,ray1,ray2,st,ceiling] [--out benchmarks/results/corpus]

A multilingual corpus of N documents is generated from tests/data/multilingual.txt (seeded): 70%
one sentence, 25% two to six, 5% ten to forty (longer than the model maximum: truncated). Each
contender runs in its own process; its whole process tree's RSS is sampled every 0.25 s.
  local    polyglot-onnx embed-corpus (streaming, shards of --shard-size rows)
  ray1/2   the same command with --engine ray on a local Ray of --threads CPUs, 1 or 2 actors
  st       a plain sentence-transformers encode loop over the checkpoint, the PyTorch baseline
           (needs --checkpoint, a sentence-transformers directory; the package's source by default)
  ceiling  Embedder.encode on the whole list in one process (in calls of 100,000, its per-call bound): the
           speed the job aims to match
Writes results.json (with versions, threads, N, tokens), table.md, and rss_throughput.png.
Targets (issue 13): local >= 90% of the ceiling's docs/s; peak RSS of local the same at 100k and 1M.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "data" / "multilingual.txt"
CONTENDERS = ("local", "ray1", "ray2", "st", "ceiling")


def generate(path: Path, n: int, seed: int = 0) -> None:
    """Write N JSONL documents without holding them in memory."""
    lines = [line for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            r = rng.random()
            k = 1 if r < 0.70 else rng.randint(2, 6) if r < 0.95 else rng.randint(10, 40)
            text = " ".join(rng.choice(lines) for _ in range(k))
            f.write(json.dumps({"id": i, "text": text}, ensure_ascii=False) + "\n")


def tree_rss(pid: int) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def committed_rows(out: Path | None, shard_size: int) -> int:
    """Rows the job has committed so far: its renamed (final) shards times the shard size."""
    if out is None or not out.is_dir():
        return 0
    return sum(1 for p in out.rglob("*.parquet") if not p.name.startswith((".", "_"))) * shard_size


def measure(cmd: list[str], env: dict[str, str] | None = None, out: Path | None = None,
            shard_size: int = 0) -> dict[str, Any]:
    """Run ``cmd``; its wall time, exit code, stdout's last line, and over time the RSS of its process
    tree and (for the jobs, which commit shards) the rows committed so far."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    samples: list[tuple[float, int]] = []

    def sample() -> None:
        while proc.poll() is None:
            samples.append((time.perf_counter() - start, tree_rss(proc.pid), committed_rows(out, shard_size)))
            time.sleep(0.25)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, err = proc.communicate()
    thread.join()
    return {"seconds": time.perf_counter() - start, "rc": proc.returncode, "stdout": out.strip().splitlines()[-1:],
            "stderr_tail": err[-1500:] if proc.returncode else "", "rss": samples,
            "peak_rss_mb": max((s[1] for s in samples), default=0) / 1e6}


RAY_JOB = """
import json, sys, ray
ray.init(num_cpus=int(sys.argv[4]), include_dashboard=False, log_to_driver=False, logging_level="error")
from polyglot_onnx.jobs import JobOptions, embed_corpus
run = embed_corpus(sys.argv[1], sys.argv[2], sys.argv[3], JobOptions(engine="ray", actors=int(sys.argv[5]),
                   cpus_per_actor=int(sys.argv[6]), shard_size=int(sys.argv[7]), show_progress=False,
                   variant=sys.argv[8]))
print(json.dumps(run["timings"]))
"""

WORKER = """
import json, sys, time
texts = [json.loads(line)["text"] for line in open(sys.argv[2], encoding="utf-8")]
kind, threads = sys.argv[1], int(sys.argv[4])
if kind == "ceiling":
    from polyglot_onnx import Embedder
    from polyglot_onnx.runtime.text import MAX_TEXTS  # encode's per-call bound: 100,000 texts
    emb = Embedder.load(sys.argv[3], threads=threads, variant=sys.argv[5])
    start = time.perf_counter()
    for i in range(0, len(texts), MAX_TEXTS):
        emb.encode(texts[i : i + MAX_TEXTS], batch_size=32)
else:
    import torch
    torch.set_num_threads(threads)
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(sys.argv[3], device="cpu")
    start = time.perf_counter()
    model.encode(texts, batch_size=32, normalize_embeddings=True)
print(json.dumps({"encode_seconds": time.perf_counter() - start}))
"""


def command(name: str, args: argparse.Namespace, corpus: Path, work: Path) -> list[str] | None:
    py = sys.executable
    if name == "local":
        return [py, "-m", "polyglot_onnx", "embed-corpus", args.package, "--input", str(corpus), "--out",
                str(work / "local"), "--threads", str(args.threads), "--shard-size", str(args.shard_size),
                "--variant", args.variant, "--max-batch-tokens", args.max_batch_tokens, "--quiet"]
    if name in ("ray1", "ray2"):
        actors = int(name[-1])
        return [py, "-c", RAY_JOB, args.package, str(corpus), str(work / name), str(args.threads), str(actors),
                str(max(1, args.threads // actors)), str(args.shard_size), args.variant]
    if name == "ceiling":
        return [py, "-c", WORKER, "ceiling", str(corpus), args.package, str(args.threads), args.variant]
    if name == "st":
        return [py, "-c", WORKER, "st", str(corpus), args.checkpoint, str(args.threads)] if args.checkpoint else None
    raise SystemExit(f"unknown contender {name!r}: choose from {', '.join(CONTENDERS)}")


TINY_NAMES = ("tiny-bert",)


def tiny_package(name: str, work: Path) -> tuple[Path, Path]:
    """The tiny sentence-transformers fixture (seeded) and its fp32 package, built once under ``work``."""
    from polyglot_onnx.bench.prepare import resolve_checkpoint
    from polyglot_onnx.export import ExportOptions, export_package

    _, checkpoint = resolve_checkpoint(name, False, work)
    package = work / "packages" / name
    if not (package / "manifest.json").is_file():
        export_package(str(checkpoint), package, ExportOptions(show_progress=False, overwrite=True))
    return package, checkpoint


def count_tokens(package: str, corpus: Path) -> int:
    import warnings

    from polyglot_onnx import Embedder

    text = Embedder.load(package).engine.text
    total, batch = 0, []
    with warnings.catch_warnings(), open(corpus, encoding="utf-8") as f:
        warnings.simplefilter("ignore")
        for line in f:
            batch.append(json.loads(line)["text"])
            if len(batch) == 4096:
                total += sum(len(e.ids) for e in text.encode(batch))
                batch = []
        if batch:
            total += sum(len(e.ids) for e in text.encode(batch))
    return total


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rss, ax_done, ax_rate) = plt.subplots(1, 3, figsize=(16, 4.5))
    for name, r in results["contenders"].items():
        if not r.get("rss"):
            continue
        t = [s[0] for s in r["rss"]]
        ax_rss.plot(t, [s[1] / 1e6 for s in r["rss"]], label=name)
        if any(len(s) > 2 and s[2] for s in r["rss"]):
            ax_done.plot(t, [s[2] for s in r["rss"]], label=name)
        ax_rate.bar(name, r.get("docs_per_s", 0))
    ax_rss.set(xlabel="seconds", ylabel="RSS of the process tree (MB)", title="Memory over time")
    ax_done.set(xlabel="seconds", ylabel="documents committed", title="Job progress over time (committed shards)")
    ax_rate.set(ylabel="documents / s", title=f"Throughput, {results['docs']:,} docs, {results['threads']} threads")
    ax_rss.legend()
    ax_done.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(results: dict[str, Any]) -> str:
    ceiling = results["contenders"].get("ceiling", {}).get("docs_per_s")
    rows = ["| contender | docs/s | tokens/s | vs ceiling | peak RSS (MB) | wall (s) |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in results["contenders"].items():
        if "docs_per_s" not in r:
            rows.append(f"| {name} | {r.get('skipped') or 'failed'} | | | | |")
            continue
        ratio = f"{r['docs_per_s'] / ceiling:.2f}x" if ceiling else "-"
        rows.append(f"| {name} | {r['docs_per_s']:,.1f} | {r['tokens_per_s']:,.0f} | {ratio} | "
                    f"{r['peak_rss_mb']:,.0f} | {r['seconds']:.1f} |")
    return "\n".join(rows) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package")
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--checkpoint", default=None, help="sentence-transformers dir (default: the package's source)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variant", default="auto")
    parser.add_argument("--shard-size", type=int, default=10_000)
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--max-batch-tokens", default="auto", help="the local engine's batch budget (auto: by width)")
    parser.add_argument("--out", default="benchmarks/results/corpus")
    parser.add_argument("--work", default=None, help="where a tiny fixture's checkpoint and package are built (kept)")
    args = parser.parse_args()
    if args.package in TINY_NAMES:  # e.g. tiny-bert: the 2-layer test fixture, to measure the job's own overhead
        package, checkpoint = tiny_package(args.package, Path(args.work or tempfile.mkdtemp(prefix="corpus-tiny-")))
        args.package, args.checkpoint = str(package), args.checkpoint or str(checkpoint)
    if args.checkpoint is None:
        source = json.loads((Path(args.package) / "manifest.json").read_text())["model"]["source"]
        args.checkpoint = source if (Path(source) / "modules.json").is_file() else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="corpus-bench-") as tmp:
        work = Path(tmp)
        corpus = work / "corpus.jsonl"
        generate(corpus, args.docs)
        tokens = count_tokens(args.package, corpus)
        results: dict[str, Any] = {"docs": args.docs, "tokens": tokens, "threads": args.threads,
                                   "variant": args.variant, "shard_size": args.shard_size, "max_batch_tokens": args.max_batch_tokens,
                                   "package": Path(args.package).name,
                                   "python": platform.python_version(), "machine": platform.processor() or platform.machine(),
                                   "cpus": os.cpu_count(), "contenders": {}}
        for name in args.contenders.split(","):
            cmd = command(name, args, corpus, work)
            if cmd is None:
                results["contenders"][name] = {"skipped": "no sentence-transformers checkpoint (--checkpoint)"}
                continue
            print(f"{name} ...", file=sys.stderr, flush=True)
            r = measure(cmd, out=work / name if name in ("local", "ray1", "ray2") else None,
                        shard_size=args.shard_size)
            r["stdout"] = [line.replace(str(work), "WORK") for line in r["stdout"]]  # no machine paths in results
            if r["rc"] == 0:
                r["docs_per_s"] = args.docs / r["seconds"]
                r["tokens_per_s"] = tokens / r["seconds"]
            results["contenders"][name] = r
            print(f"  rc {r['rc']}, {r['seconds']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB {r['stderr_tail']}",
                  file=sys.stderr)
    from importlib.metadata import version

    results["versions"] = {p: version(p) for p in ("onnxruntime", "pyarrow", "polyglot-onnx")}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "table.md").write_text(table(results))
    plot(results, out / "rss_throughput.png")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
