"""``polyglot-onnx embed-corpus DIR --input PATH|GLOB --out OUT_DIR``: the parser and the command."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from polyglot_onnx.jobs.options import (
    DTYPES,
    ENGINES,
    FORMATS,
    LONG_TEXT,
    OUTPUTS,
    POOLINGS,
    VECTOR_COLUMN,
    split_columns,
)


def add_embed_corpus_parser(sub: Any) -> None:
    p = sub.add_parser("embed-corpus", help="embed a corpus (JSONL, Parquet, CSV, text) into Parquet shards; resumable")
    p.add_argument("package", help="package directory made by 'polyglot-onnx export'")
    p.add_argument("--input", required=True, action="append",
                   help="file, directory or glob (quote it: 'data/*.jsonl'); repeatable")
    p.add_argument("--out", required=True,
                   help="output directory: shards in OUT/data/ (read it as it is), _run.json, _errors.jsonl")
    p.add_argument("--format", choices=FORMATS, default=None, help="default: from the file extension")
    p.add_argument("--text-column", default="text", help="JSONL key / column holding the text (default text)")
    p.add_argument("--id-column", default=None, help="column holding ids (stored as strings); default: row number")
    p.add_argument("--keep-columns", action="append", default=None, metavar="COL[,COL...]",
                   help="input columns copied into the shards (e.g. text,url); CSV and JSONL values as strings")
    p.add_argument("--vector-column", default=VECTOR_COLUMN,
                   help=f"name of the vector column (default {VECTOR_COLUMN}; LanceDB looks for 'vector')")
    p.add_argument("--output", choices=OUTPUTS, default="sentence")
    p.add_argument("--pooling", choices=POOLINGS, default=None, help="default: the package's")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=True,
                   help="L2-normalize vectors (default on)")
    p.add_argument("--prompt-name", default=None,
                   help="a prompt the package defines (e.g. query, passage); default: the package's default prompt")
    p.add_argument("--prompt", default=None,
                   help="text prepended to every input, as sentence-transformers does ('' for none)")
    p.add_argument("--dimensions", type=int, default=None,
                   help="Matryoshka: keep the first N dimensions of sentence vectors (then normalize)")
    p.add_argument("--long-text", choices=LONG_TEXT, default="truncate",
                   help="texts over the model maximum: cut them, or embed them in windows (if the runtime has it)")
    p.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="stored vectors; int8 scales are calibrated on the first shard and stored in _run.json")
    p.add_argument("--max-batch-tokens", type=batch_tokens, default=None, metavar="N|auto",
                   help="rows x padded length per model call; auto (default): by the model's width, 1024 at hidden 384")
    p.add_argument("--shard-size", type=int, default=10_000, help="input rows per output shard (and per read chunk)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (local engine)")
    p.add_argument("--variant", default="auto")
    p.add_argument("--provider", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--resume", action="store_true", help="require an existing run in --out and continue it")
    p.add_argument("--fail-on-error", action="store_true", help="stop at the first bad row instead of logging it")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--engine", choices=ENGINES, default="local")
    p.add_argument("--ray-address", default=None, help="existing Ray cluster (e.g. ray://head:10001 or auto)")
    p.add_argument("--actors", type=int, default=1, help="Ray actors, each loading the package once")
    p.add_argument("--cpus-per-actor", type=int, default=1, help="Ray CPUs per actor = its onnxruntime threads")


def batch_tokens(value: str) -> int | None:
    """'auto' (None: chosen from the model's width) or a positive integer."""
    if value == "auto":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is neither 'auto' nor an integer") from None


def cmd_embed_corpus(args: argparse.Namespace) -> int:
    from polyglot_onnx.jobs import JobOptions, embed_corpus

    options = JobOptions(
        format=args.format, text_column=args.text_column, id_column=args.id_column, output=args.output,
        pooling=args.pooling, normalize=args.normalize, long_text=args.long_text, dtype=args.dtype,
        max_batch_tokens=args.max_batch_tokens, shard_size=args.shard_size, threads=args.threads,
        variant=args.variant, provider=args.provider, fail_on_error=args.fail_on_error,
        show_progress=not args.quiet, engine=args.engine, ray_address=args.ray_address, actors=args.actors,
        cpus_per_actor=args.cpus_per_actor, prompt_name=args.prompt_name, prompt=args.prompt,
        dimensions=args.dimensions, vector_column=args.vector_column, keep_columns=split_columns(args.keep_columns),
    )
    run = embed_corpus(args.package, args.input, args.out, options, resume=args.resume)
    c, t = run["counts"], run["timings"]
    if not args.quiet:
        print(f"{c['embedded']} embedded, {c['errors']} bad rows (see _errors.jsonl), {c['truncated']} truncated, "
              f"{c['shards']} shards in {args.out}; {t['docs_per_s']:.1f} docs/s, {t['tokens_per_s']:.0f} tokens/s",
              file=sys.stderr)
    print(json.dumps({"out": args.out, "counts": c, "timings": t}))
    return 0
