"""Load test for ``polyglot-onnx serve``: N concurrent clients for T seconds, single texts, mixed lengths.

Compares in one run, on the same package and cores:
  inprocess  the runtime's Embedder over the same texts at its best batch size (no HTTP, no queue)
  server     polyglot-onnx serve (token-budget dynamic batching)
  nobatch    polyglot-onnx serve --no-batching (one input per onnxruntime call)
  infinity   Infinity (infinity-emb, optimum/ONNX engine) from an isolated venv, on --checkpoint
Reports req/s, texts/s, tokens/s, p50/p90/p99 latency, errors and the server's RSS over time; writes
results.jsonl and results.md (and latency_vs_load.png when several --clients levels and matplotlib).

Example (the published measurement; takes minutes):
  python benchmarks/serve_load.py packages/mbert-cased --variant int8 --threads 2 --clients 1,10,50 --seconds 60
Smoke check (seconds): python benchmarks/serve_load.py PKG --clients 4 --seconds 2 --contenders server,nobatch
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from polyglot_onnx.serve.launch import start_process, stop_process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def corpus(package: Path, size: int, low: int, high: int) -> tuple[list[str], list[int]]:
    """The bench suite's mixed-length multilingual texts (log-uniform token lengths)."""
    from polyglot_onnx.bench.workloads import TextCutter, corpus_workload
    from polyglot_onnx.manifest import read_manifest

    manifest = read_manifest(package)
    high = min(high, manifest.model.max_length)
    cutter = TextCutter(package / manifest.tokenizer.file, manifest.tokenizer.mask_token)
    workload = corpus_workload(cutter, size, batch=1, low=low, high=high)
    return workload.texts, [cutter.length(t) for t in workload.texts]


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class RssSampler(threading.Thread):
    """The server process's resident memory, once a second."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.samples, self.stop = pid, [], threading.Event()
        self.start_time = time.monotonic()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            value = rss_mb(self.pid)
            if value is not None:
                self.samples.append((round(time.monotonic() - self.start_time, 1), round(value, 1)))


async def drive(url: str, path: str, body: Any, texts: list[str], lengths: list[int], clients: int,
                seconds: float) -> dict[str, Any]:
    """``clients`` loops, each sending one text per request until the time is up."""
    import httpx

    latencies: list[float] = []
    tokens = [0]
    errors: list[str] = []

    async def client(seed: int, http: httpx.AsyncClient, stop: float) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop:
            i = rng.randrange(len(texts))
            t0 = time.perf_counter()
            try:
                res = await http.post(path, json=body(texts[i]))
                ok = res.status_code == 200
                if not ok:
                    errors.append(f"{res.status_code} {res.text[:100]}")
            except httpx.HTTPError as err:
                ok = False
                errors.append(type(err).__name__)
            if ok:
                latencies.append(time.perf_counter() - t0)
                tokens[0] += lengths[i]

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:
        start = time.monotonic()
        await asyncio.gather(*(client(s, http, start + seconds) for s in range(clients)))
        elapsed = time.monotonic() - start
    lat = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return {
        "clients": clients, "seconds": round(elapsed, 2), "requests": len(latencies),
        "req_s": round(len(latencies) / elapsed, 2), "texts_s": round(len(latencies) / elapsed, 2),
        "tokens_s": round(tokens[0] / elapsed, 1), "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p90_ms": round(float(np.percentile(lat, 90)), 2), "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "errors": len(errors), "error_examples": sorted(set(errors))[:3],
    }


def run_inprocess(args: argparse.Namespace, texts: list[str], lengths: list[int]) -> dict[str, Any]:
    """The ceiling: the runtime at its best batch size over the same texts, no HTTP."""
    from polyglot_onnx import Embedder

    emb = Embedder.load(args.package, provider="cpu", variant=args.variant, threads=args.threads)
    emb.encode(texts[:8])
    best: dict[str, Any] = {}
    per_batch = {}
    for batch in (1, 8, 16, 32, 64):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < args.seconds / 5 or n == 0:
            chunk = texts[n % len(texts):][: batch * 4] or texts[: batch * 4]
            emb.encode(chunk, batch_size=batch)
            n += len(chunk)
        rate = n / (time.perf_counter() - start)
        per_batch[batch] = round(rate, 2)
        if rate > best.get("texts_s", 0):
            best = {"texts_s": round(rate, 2), "batch": batch}
    mean_tokens = float(np.mean(lengths))
    return {"contender": "inprocess", "variant": emb.variant, **best, "req_s": best["texts_s"],
            "tokens_s": round(best["texts_s"] * mean_tokens, 1), "per_batch": per_batch, "errors": 0}


def run_http(name: str, cmd: list[str], url: str, health: str, path: str, body: Any, args: argparse.Namespace,
             texts: list[str], lengths: list[int], levels: list[int]) -> list[dict[str, Any]]:
    log = Path(args.out) / f"{name}.log"
    proc = start_process(cmd, url + health, log, wait=600)
    rows = []
    try:
        asyncio.run(drive(url, path, body, texts, lengths, 4, min(3.0, args.seconds)))  # warm-up, not reported
        for clients in levels:
            sampler = RssSampler(proc.pid)
            sampler.start()
            row = asyncio.run(drive(url, path, body, texts, lengths, clients, args.seconds))
            sampler.stop.set()
            rows.append({"contender": name, **row, "rss_mb": sampler.samples})
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "rss_mb"}), file=sys.stderr)
    finally:
        code = stop_process(proc)
    for row in rows:
        row["exit_code"] = code
    return rows


def ours(args: argparse.Namespace, port: int, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "polyglot_onnx", "serve", str(args.package), "--port", str(port), "--variant",
            args.variant, "--threads", str(args.threads), "--log-level", "warning",
            "--max-concurrent-requests", "4096", *args.server_args.split(), *extra]


INFINITY_MODEL = "infinity-model"


def infinity_cmd(args: argparse.Namespace, port: int) -> list[str]:
    """Infinity from its own venv (it pins its own torch/optimum); the same checkpoint, ONNX engine."""
    if not args.infinity_env or not args.checkpoint:
        raise SystemExit("the infinity contender needs --infinity-env VENV and --checkpoint DIR")
    exe = Path(args.infinity_env).resolve() / "bin" / "infinity_emb"
    # Run from inside the checkpoint with --model-id .: infinity 0.0.78 hands optimum the ONNX file
    # prefixed with a local model path, which optimum then fails to find.
    serve = (f'cd "{Path(args.checkpoint).resolve()}" && exec "{exe}" v2 --model-id . --served-model-name '
             f"{INFINITY_MODEL} --engine optimum --port {port} --batch-size 32 --device cpu")
    return ["sh", "-c", serve]


WARM_UP_S = 60.0  # the soak target compares the end of a run with its RSS this long after the start


def rss_growth(rss: list[tuple[float, float]], warm_up_s: float = WARM_UP_S) -> float | None:
    """RSS at the end of a run relative to its RSS after the warm-up (the 10-minute soak target: <= 5%)."""
    after = [mb for t, mb in rss if t >= warm_up_s]
    if len(after) < 2:
        return None
    return round(100.0 * (after[-1] - after[0]) / after[0], 2)


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    title = (f"# serve load: {meta['package']} ({meta['variant']}), {meta['threads']} threads, "
             f"{meta['texts']} texts of {meta['low']}-{meta['high']} tokens (mean {meta['mean_tokens']:.0f})")
    lines = [title, "",
             ("| contender | clients | req/s | tokens/s | p50 ms | p90 ms | p99 ms | errors | RSS MB start→end |"
              f" RSS growth after {WARM_UP_S:.0f} s |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rss = r.get("rss_mb") or []
        growth = rss_growth(rss)
        mem = f"{rss[0][1]:.0f}→{rss[-1][1]:.0f} | {'-' if growth is None else f'{growth:+.2f}%'}" if rss else "- | -"
        lines.append(f"| {r['contender']}{' (batch ' + str(r['batch']) + ')' if 'batch' in r else ''} | "
                     f"{r.get('clients', '-')} | {r['req_s']} | {r['tokens_s']} | {r.get('p50_ms', '-')} | "
                     f"{r.get('p90_ms', '-')} | {r.get('p99_ms', '-')} | {r['errors']} | {mem} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in sorted({r["contender"] for r in rows if "clients" in r}):
        pts = sorted((r["req_s"], r["p99_ms"]) for r in rows if r["contender"] == name and "clients" in r)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xlabel("throughput (requests/s)")
    ax.set_ylabel("p99 latency (ms)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def plot_rss(rows: list[dict[str, Any]], out: Path) -> None:
    """Server RSS over each run (the soak's evidence), one line per contender and client count."""
    long_runs = [r for r in rows if len(r.get("rss_mb") or []) > WARM_UP_S]
    if not long_runs:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in long_runs:
        ax.plot([t for t, _ in r["rss_mb"]], [mb for _, mb in r["rss_mb"]], label=f"{r['contender']}, {r['clients']} clients")
    ax.axvline(WARM_UP_S, color="grey", linestyle=":", label="end of warm-up")
    ax.set(xlabel="seconds under load", ylabel="server RSS (MB)", title="Server memory under sustained load")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("package", type=Path)
    p.add_argument("--variant", default="auto")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--clients", default="50", help="comma-separated concurrency levels")
    p.add_argument("--seconds", type=float, default=30.0, help="per contender and level")
    p.add_argument("--contenders", default="inprocess,server,nobatch")
    p.add_argument("--texts", type=int, default=1000)
    p.add_argument("--low", type=int, default=5)
    p.add_argument("--high", type=int, default=400)
    p.add_argument("--checkpoint", default=None, help="the Hugging Face checkpoint Infinity serves")
    p.add_argument("--infinity-env", default=None, help="virtualenv with infinity-emb[optimum] installed")
    p.add_argument("--server-args", default="", help="extra 'polyglot-onnx serve' options, e.g. '--max-batch-rows 8'")
    p.add_argument("--out", default="serve-load-results")
    args = p.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    levels = [int(c) for c in args.clients.split(",") if c.strip()]
    texts, lengths = corpus(args.package, args.texts, args.low, args.high)
    rows: list[dict[str, Any]] = []
    for name in [c.strip() for c in args.contenders.split(",") if c.strip()]:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        if name == "inprocess":
            rows.append(run_inprocess(args, texts, lengths))
        elif name in ("server", "nobatch"):
            cmd = ours(args, port, ["--no-batching"] if name == "nobatch" else [])
            rows += run_http(name, cmd, url, "/health", "/embed", lambda t: {"inputs": t}, args, texts, lengths, levels)
        elif name == "infinity":
            model = INFINITY_MODEL
            rows += run_http(name, infinity_cmd(args, port), url, "/health", "/embeddings",
                             lambda t, m=model: {"input": [t], "model": m}, args, texts, lengths, levels)
        else:
            raise SystemExit(f"unknown contender {name!r}: choose inprocess, server, nobatch, infinity")
    meta = {"package": args.package.name, "variant": args.variant, "threads": args.threads, "texts": len(texts),
            "low": args.low, "high": args.high, "mean_tokens": float(np.mean(lengths)), "cpu_count": os.cpu_count(),
            "machine": platform.processor() or platform.machine(), "python": platform.python_version()}
    with open(Path(args.out) / "results.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps({**meta, **row}) + "\n" for row in rows)
    table = markdown(rows, meta)
    (Path(args.out) / "results.md").write_text(table, encoding="utf-8")
    if len(levels) > 1:
        plot(rows, Path(args.out) / "latency_vs_load.png")
    plot_rss(rows, Path(args.out) / "rss_over_time.png")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
