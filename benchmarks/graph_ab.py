"""Graphs head to head on bare onnxruntime sessions, interleaved call by call in one process.

    python benchmarks/graph_ab.py PKG_A PKG_B [PKG_C ...] --variant int8 --lengths 16,32,128 --batch 1 \
        [--json OUT.json]

Same feeds for every package (random ids, no padding, no mask positions), 2 intra-op threads; each
repetition calls every package once, so the VM's drift over minutes hits all of them alike (this
machine's run-to-run spread between processes is larger than the differences measured here). No
tokenizer, no Embedder: the graph alone. The first package is compared with the last (the reference).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np


def main() -> None:
    import onnxruntime as ort

    from polyglot_onnx.manifest import read_manifest
    from polyglot_onnx.runtime.cpu import detect_cpu

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="+")
    parser.add_argument("--variant", default="int8")
    parser.add_argument("--lengths", default="32,128,512")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=3000, help="tokens timed per package and length (sets reps)")
    parser.add_argument("--json")
    args = parser.parse_args()
    sessions = {}
    for pkg in args.packages:
        manifest = read_manifest(pkg)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        graph = manifest.variants[args.variant].files[0].path
        sessions[Path(pkg).name] = ort.InferenceSession(str(Path(pkg) / graph), opts, providers=["CPUExecutionProvider"])
    names = list(sessions)
    reference = names[-1]
    rows = []
    for length in (int(n) for n in args.lengths.split(",")):
        feeds = {"input_ids": np.random.default_rng(0).integers(5, 1000, (args.batch, length)).astype(np.int64),
                 "attention_mask": np.ones((args.batch, length), np.int64)}
        times: dict[str, list[float]] = {n: [] for n in names}
        for name in names:
            run_feeds = _feeds_for(sessions[name], feeds)
            for _ in range(3):
                sessions[name].run(None, run_feeds)
        reps = max(5, args.tokens // (length * args.batch))
        for _ in range(reps):
            for name in names:
                run_feeds = _feeds_for(sessions[name], feeds)
                start = time.perf_counter()
                sessions[name].run(None, run_feeds)
                times[name].append((time.perf_counter() - start) * 1e3)
        median = {n: round(statistics.median(t), 2) for n, t in times.items()}
        rows.append({"batch": args.batch, "length": length, "reps": reps, "median_ms": median,
                     "vs_reference": {n: round(median[n] / median[reference] - 1, 4) for n in names}})
        print(f"b{args.batch} L{length} ({reps} reps): " + "  ".join(
            f"{n} {median[n]:.1f} ms ({median[n] / median[reference] - 1:+.1%})" for n in names), flush=True)
    if args.json:
        result = {"cpu": detect_cpu().to_dict(), "variant": args.variant, "reference": reference, "rows": rows}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def _feeds_for(session: object, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The package's inputs: an empty mask_positions where the graph has the masked-LM head."""
    names = {i.name for i in session.get_inputs()}  # type: ignore[attr-defined]
    out = {k: v for k, v in feeds.items() if k in names}
    if "mask_positions" in names:
        out["mask_positions"] = np.zeros(0, np.int64)
    return out


if __name__ == "__main__":
    main()
