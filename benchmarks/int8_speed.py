"""int8 recipes head to head on one package, interleaved in one process (this VM's run-to-run
spread between processes is larger than the difference being measured).

    python benchmarks/int8_speed.py PACKAGE [--variants int8,int8-dynamic,fp32] [--rounds 7]
    python benchmarks/int8_speed.py PACKAGE --against OTHER[,OTHER...] --variants fp32,int8   # several exports


Each round times every variant once per workload (embed batch 1 at 32/128/512 tokens, embed
batch 32 x 128, fill-mask batch 1 x 128); the median over rounds is printed with the CPU's int8
kernel class.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np


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


def main() -> None:
    from polyglot_onnx import Embedder, FillMask
    from polyglot_onnx.runtime.cpu import detect_cpu

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package")
    parser.add_argument("--variants", default="int8,int8-dynamic,fp32")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--against", help="more packages, comma-separated (e.g. the --dense-attention export): "
                        "same variants, all timed")
    parser.add_argument("--json")
    args = parser.parse_args()
    # label -> (package, variant); with --against, labels are 'DIRNAME:variant'
    packages = [args.package] + (args.against.split(",") if args.against else [])
    sources = {(f"{Path(pkg).name}:{v}" if args.against else v): (pkg, v)
               for pkg in packages for v in args.variants.split(",")}
    variants = list(sources)
    embs = {k: Embedder.load(pkg, provider="cpu", variant=v, threads=2, verify=False) for k, (pkg, v) in sources.items()}
    fills = {k: FillMask.load(pkg, provider="cpu", variant=v, threads=2, verify=False) for k, (pkg, v) in sources.items()}
    first = embs[variants[0]]
    texts = {n: _text(n, first) for n in (32, 128, 512)}
    mask = first.engine.manifest.tokenizer.mask_token
    masked = texts[128].rsplit(" ", 8)[0] + f" {mask} " + " ".join(texts[128].rsplit(" ", 8)[1:-1])
    workloads = {
        "embed b1 s32": lambda v: embs[v].encode([texts[32]]),
        "embed b1 s128": lambda v: embs[v].encode([texts[128]]),
        "embed b1 s512": lambda v: embs[v].encode([texts[512]]),
        "embed b32 s128": lambda v: embs[v].encode([texts[128]] * 32, batch_size=32),
        "fill-mask b1 s128": lambda v: fills[v](masked),
    }
    times: dict[str, dict[str, list[float]]] = {w: {v: [] for v in variants} for w in workloads}
    for _ in range(args.rounds + 1):
        for w, fn in workloads.items():
            for v in variants:
                start = time.perf_counter()
                fn(v)
                times[w][v].append((time.perf_counter() - start) * 1e3)
    result = {
        "cpu": detect_cpu().to_dict(),
        "median_ms": {w: {v: round(float(np.median(t[1:])), 2) for v, t in per.items()} for w, per in times.items()},
    }
    print(f"cpu: {result['cpu']['int8_kernel_class']} {result['cpu'].get('features')}")
    print("| workload | " + " | ".join(variants) + " |")
    print("|---|" + "---|" * len(variants))
    for w, per in result["median_ms"].items():
        print(f"| {w} | " + " | ".join(f"{per[v]:.1f} ms" for v in variants) + " |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
