"""``polyglot-onnx bench``: its arguments and the command, kept beside the suite they drive.

The main CLI registers this sub-command; the suite itself is imported only when it runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from polyglot_onnx.errors import PolyglotError


def add_bench_parser(sub: Any) -> None:
    """Register ``bench`` on the main CLI's sub-parsers."""
    p = sub.add_parser("bench", help="time PyTorch, Optimum and polyglot-onnx side by side; table and plots")
    p.add_argument("model", help="catalog name (with --random-weights), local checkpoint dir, or tiny-bert / tiny-modernbert")
    p.add_argument("--random-weights", action="store_true", help="catalog MODEL at full size with random weights")
    p.add_argument("--tasks", default="fill-mask,embed", help="comma-separated: fill-mask, embed")
    p.add_argument("--contenders", default="torch,optimum,polyglot",
                   help="comma-separated: torch, optimum, ortopt (onnxruntime.transformers.optimizer, no Optimum "
                        "install), polyglot, dense (polyglot with dense local attention)")
    p.add_argument("--variants", default=None,
                   help="polyglot variants (e.g. fp32,int8); FAMILY=V1+V2 for others (optimum=O2+int8, torch=fp32)")
    p.add_argument("--batch", default="1,32", help="comma-separated batch sizes")
    p.add_argument("--seq", default=None, help="comma-separated sequence lengths (default 32,128,512 + 2048,8192 at batch 1)")
    p.add_argument("--corpus-size", type=int, default=2000, help="mixed-length corpus texts (0: leave it out)")
    p.add_argument("--corpus-batch", type=int, default=32, help="batch size of the corpus workload")
    p.add_argument("--document-seq", default="512,2048,8192",
                   help="whole-document embed rows, batch 1, polyglot only (windowed past the maximum; 0: none)")
    p.add_argument("--provider", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads for every contender")
    p.add_argument("--iters", type=int, default=3, help="minimum timed calls per row")
    p.add_argument("--max-iters", type=int, default=50)
    p.add_argument("--budget", type=float, default=5.0, help="seconds of timed calls per row (beyond --iters)")
    p.add_argument("--memory-limit", type=float, default=8.0, help="GiB: rows needing a larger logits tensor are skipped")
    p.add_argument("--optimum-env", default=None, help="the isolated Optimum virtualenv (default ~/.cache/polyglot-onnx)")
    p.add_argument("--out", default="bench-results", help="output directory (results.jsonl, results.md, plots)")
    p.add_argument("--work", default=None, help="where checkpoints, packages and Optimum builds are cached (default OUT/work)")
    p.add_argument("--quiet", action="store_true")


def _int_list(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise PolyglotError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values:
        raise PolyglotError(f"{what} is empty: give at least one value")
    return values


def _bench_variants(text: str | None) -> dict[str, tuple[str, ...]]:
    """'fp32,int8' (polyglot) or 'polyglot=fp32+int8;optimum=O2+int8' style per-family lists."""
    if not text:
        return {}
    if "=" not in text:
        return {"polyglot": tuple(v.strip() for v in text.split(",") if v.strip())}
    out = {}
    for part in text.replace(";", ",").split(","):
        family, _, values = part.partition("=")
        if not values:
            raise PolyglotError(f"--variants item {part!r} needs FAMILY=V1+V2 (e.g. optimum=O2+int8)")
        out[family.strip()] = tuple(v.strip() for v in values.split("+") if v.strip())
    return out


def cmd_bench(args: argparse.Namespace) -> int:
    from polyglot_onnx.bench.suite import BenchOptions, run_bench
    from polyglot_onnx.bench.timing import TimingPolicy

    options = BenchOptions(
        model=args.model,
        out=Path(args.out),
        random_weights=args.random_weights,
        tasks=tuple(t.strip() for t in args.tasks.split(",") if t.strip()),
        contenders=tuple(c.strip() for c in args.contenders.split(",") if c.strip()),
        variants=_bench_variants(args.variants),
        batches=_int_list(args.batch, "--batch"),
        seqs=_int_list(args.seq, "--seq") if args.seq else None,
        corpus_size=args.corpus_size,
        corpus_batch=args.corpus_batch,
        document_seqs=() if args.document_seq.strip() in ("", "0") else _int_list(args.document_seq, "--document-seq"),
        provider=args.provider,
        threads=args.threads,
        timing=TimingPolicy(min_iters=args.iters, max_iters=max(args.iters, args.max_iters), budget_s=args.budget),
        memory_limit_gb=args.memory_limit,
        optimum_env=Path(args.optimum_env) if args.optimum_env else None,
        work=Path(args.work) if args.work else None,
        show_progress=not args.quiet,
    )
    summary = run_bench(options)
    for target in summary["targets"]:
        state = "not measured" if target["met"] is None else ("met" if target["met"] else "MISSED")
        measured = "—" if target["measured"] is None else f"{target['measured']:.2f}"
        print(f"{target['target']}: {measured} (need >= {target['minimum']}) {state}")
    print(f"results: {Path(args.out) / 'results.md'}")
    return 0
