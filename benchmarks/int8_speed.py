"""int8 recipes head to head on one package: each variant alone in its own process, as the runtime runs it,
the processes alternating round after round; the median over rounds is printed with the CPU's int8 kernel class.

    python benchmarks/int8_speed.py PACKAGE [--variants int8,int8-dynamic,fp32] [--rounds 5] [--json OUT]
    python benchmarks/int8_speed.py PACKAGE --against OTHER[,OTHER...] --variants fp32,int8   # several exports

Why one process per variant: onnxruntime's intra-op threads spin for a while after each parallel
section (the runtime keeps that default: one session with spinning answers b1 x 128 ~17% faster on 2
cores). With several sessions in one process, the idle ones' spinning threads take the cores from the
one being timed, and a graph with more nodes pays more wake-ups: one-process interleaving measured the
per-row int8 graph 1.14x dynamic int8 at b1 x 128 where alone it runs 0.98x. Alternating processes keeps
the VM's drift out of the comparison instead.

Each child times every workload (embed batch 1 at 32/128/512 tokens, embed batch 32 x 128, fill-mask
batch 1 x 128) after one warm-up call, the median of ``--calls`` calls.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from polyglot_onnx.bench.timing import median_ms  # one warm-up call, then the median of the timed ones


def _text(n_tokens: int, emb: Any) -> str:
    from polyglot_onnx.quantize.corpus import load_corpus

    words = " ".join(s.text for s in load_corpus().samples).split()
    lo, hi = 1, len(words)
    while lo < hi:  # longest prefix that stays within n_tokens
        mid = (lo + hi + 1) // 2
        if len(emb.engine.text.encode([" ".join(words[:mid])])[0].ids) <= n_tokens:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


def _embed_times(package: str, variant: str, calls: int) -> tuple[dict[str, float], str]:
    from polyglot_onnx import Embedder

    emb = Embedder.load(package, provider="cpu", variant=variant, threads=2, verify=False)
    texts = {n: _text(n, emb) for n in (32, 128, 512)}
    words = texts[128].rsplit(" ", 8)
    masked = f"{words[0]} {emb.engine.manifest.tokenizer.mask_token} " + " ".join(words[1:-1])
    times = {
        "embed b1 s32": median_ms(lambda: emb.encode([texts[32]]), calls),
        "embed b1 s128": median_ms(lambda: emb.encode([texts[128]]), calls),
        "embed b1 s512": median_ms(lambda: emb.encode([texts[512]]), calls),
        "embed b32 s128": median_ms(lambda: emb.encode([texts[128]] * 32, batch_size=32), max(3, calls // 4)),
    }
    return times, masked


def child(package: str, variant: str, calls: int) -> dict[str, float]:
    """One variant alone in this process (one session at a time): the median ms of each workload."""
    import warnings

    from polyglot_onnx import FillMask

    warnings.simplefilter("ignore")  # the 512-token text is cut at the model's maximum, on purpose
    times, masked = _embed_times(package, variant, calls)  # its session is gone when this returns
    fill = FillMask.load(package, provider="cpu", variant=variant, threads=2, verify=False)
    times["fill-mask b1 s128"] = median_ms(lambda: fill(masked), calls)
    return times


def main() -> None:
    from polyglot_onnx.runtime.cpu import detect_cpu

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package")
    parser.add_argument("--variants", default="int8,int8-dynamic,fp32")
    parser.add_argument("--rounds", type=int, default=5, help="processes per variant, alternating")
    parser.add_argument("--calls", type=int, default=12, help="timed calls per workload in each process")
    parser.add_argument("--against", help="more packages, comma-separated (e.g. the --dense-attention export): "
                        "same variants, all timed")
    parser.add_argument("--json")
    parser.add_argument("--child", nargs=2, metavar=("PACKAGE", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.calls)))
        return
    # label -> (package, variant); with --against, labels are 'DIRNAME:variant'
    packages = [args.package] + (args.against.split(",") if args.against else [])
    sources = {(f"{Path(pkg).name}:{v}" if args.against else v): (pkg, v)
               for pkg in packages for v in args.variants.split(",")}
    rounds: dict[str, list[dict[str, float]]] = {label: [] for label in sources}
    for r in range(args.rounds):
        for label, (pkg, variant) in sources.items():
            done = subprocess.run([sys.executable, __file__, pkg, "--child", pkg, variant, "--calls", str(args.calls)],
                                  capture_output=True, text=True, check=False)
            if done.returncode:
                raise SystemExit(f"{label}: the timing process failed:\n{done.stderr[-2000:]}")
            rounds[label].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1}/{args.rounds} {label} done", file=sys.stderr, flush=True)
    labels = list(sources)
    workloads = list(rounds[labels[0]][0])
    result = {
        "cpu": detect_cpu().to_dict(),
        "method": f"each variant alone in its own process, {args.rounds} alternating rounds, {args.calls} calls each",
        "median_ms": {w: {v: round(float(np.median([r[w] for r in rounds[v]])), 2) for v in labels} for w in workloads},
        "rounds_ms": {v: [{w: round(t, 2) for w, t in r.items()} for r in rounds[v]] for v in labels},
    }
    print(f"cpu: {result['cpu']['int8_kernel_class']} {result['cpu'].get('features')}")
    print("| workload | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for w, per in result["median_ms"].items():
        print(f"| {w} | " + " | ".join(f"{per[v]:.1f} ms" for v in labels) + " |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
