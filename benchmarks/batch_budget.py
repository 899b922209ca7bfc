"""How many padded tokens per onnxruntime call embed a corpus fastest: the evidence for embed-corpus's
``--max-batch-tokens auto``.

    python benchmarks/batch_budget.py PACKAGE [--variant int8] [--docs 2000] [--budgets 512,1024,2048,4096,8192]
        [--rounds 3] [--threads 2] [--out benchmarks/results/batch_budget/NAME]

The corpus is corpus_bench.py's generated multilingual mix, tokenized once; each round embeds all of
it under every budget in turn (interleaved, so drift in the machine's speed hits every budget alike),
as embed-corpus does: longest-first batches under the budget, ``Embedder.encode_tokenized`` per batch.
Reports the median tokens/s per budget, the budget ``auto`` picks for this package, and the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus_bench import generate


def run_once(embedder: Any, tokenized: Any, budget: int) -> float:
    from polyglot_onnx.runtime.text import token_budget_batches

    lengths = [len(e.ids) for e in tokenized.encodings]
    start = time.perf_counter()
    for batch in token_budget_batches(lengths, budget):
        embedder.encode_tokenized(tokenized.select(batch), batch_size=len(batch))
    return time.perf_counter() - start


def main() -> int:
    from polyglot_onnx import Embedder
    from polyglot_onnx.jobs.options import auto_batch_tokens
    from polyglot_onnx.runtime.cpu import machine_block

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package")
    ap.add_argument("--variant", default="int8")
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--budgets", default="512,1024,2048,4096,8192")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        generate(corpus, args.docs)
        texts = [json.loads(line)["text"] for line in corpus.read_text(encoding="utf-8").splitlines()]
    embedder = Embedder.load(args.package, variant=args.variant, threads=args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenized = embedder.tokenize(texts)
    tokens = sum(len(e.ids) for e in tokenized.encodings)
    run_once(embedder, tokenized.select(range(min(200, len(texts)))), budgets[0])  # warm-up
    seconds: dict[int, list[float]] = {b: [] for b in budgets}
    for r in range(args.rounds):
        for b in budgets:
            seconds[b].append(run_once(embedder, tokenized, b))
            print(f"round {r + 1}/{args.rounds} budget {b}: {tokens / seconds[b][-1]:,.0f} tokens/s", flush=True)
    model = embedder.engine.manifest.model
    result = {
        "package": model.name, "hidden_size": model.hidden_size, "num_layers": model.num_layers,
        "variant": embedder.variant, "threads": args.threads, "docs": len(texts), "tokens": tokens,
        "auto": auto_batch_tokens(model.hidden_size), "machine": machine_block(embedder.provider),
        "budgets": {str(b): {"median_s": statistics.median(s), "tokens_per_s": tokens / statistics.median(s),
                             "seconds": s} for b, s in seconds.items()},
        "command": "python benchmarks/batch_budget.py PACKAGE " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("package", "out")),
    }
    best = max(budgets, key=lambda b: result["budgets"][str(b)]["tokens_per_s"])
    head = (f"{model.name} ({model.num_layers} layers x {model.hidden_size}), {embedder.variant}, {args.threads} "
            f"threads, {len(texts):,} docs / {tokens:,} tokens; auto = {result['auto']}")
    lines = [head, "",
             "| max batch tokens | tokens/s | vs best |", "|---:|---:|---:|"]
    for b in budgets:
        tps = result["budgets"][str(b)]["tokens_per_s"]
        mark = " (auto)" if b == result["auto"] else ""
        lines.append(f"| {b}{mark} | {tps:,.0f} | {tps / result['budgets'][str(best)]['tokens_per_s']:.2f}x |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        (args.out / "table.md").write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
