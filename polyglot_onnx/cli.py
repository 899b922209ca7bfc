"""``polyglot-onnx``: export | quantize | drift | verify | fill-mask | embed | info | serve | embed-corpus |
demo | bench.

Library errors become one line on stderr and a non-zero exit here, and only here. Heavy imports
happen inside the command that needs them, so runtime commands work without torch.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polyglot_onnx.bench.cli import add_bench_parser, cmd_bench
from polyglot_onnx.cli_build import add_build_parsers, cmd_drift, cmd_export, cmd_quantize
from polyglot_onnx.cli_io import broken_pipe, evidence_lines, read_texts, silence_stdout, stdout_problem
from polyglot_onnx.cli_precision import add_precision_args, load_ranges, vectors_json
from polyglot_onnx.errors import PolyglotError
from polyglot_onnx.jobs.cli import add_embed_corpus_parser, cmd_embed_corpus
from polyglot_onnx.selfcheck_cli import add_verify_parser, cmd_verify, machine_lines
from polyglot_onnx.serve.cli import add_serve_parser, cmd_serve

EXIT_ERROR = 1


def _runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("package", help="package directory made by 'polyglot-onnx export'")
    p.add_argument("--provider", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--variant", default="auto", help="auto, fp32, ... (a variant in the package)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("texts", nargs="*", help="input texts (fill-mask: containing the model's mask token)")
    p.add_argument("--file", help="read texts from FILE, one per line (- for stdin)")


def _texts(args: argparse.Namespace) -> list[str]:
    """Texts from the command line, or one per line from --file (- for stdin); strictly UTF-8."""
    texts = read_texts(args)
    if not texts:
        raise PolyglotError("no input text: pass texts as arguments or --file FILE (one per line)")
    return texts


def _version() -> str:
    """'polyglot-onnx X (onnxruntime Y, python Z)': what a bug report needs first."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("polyglot-onnx")
    except PackageNotFoundError:  # running from a source tree that was never installed
        ours = "unknown (not installed)"
    try:
        ort = version("onnxruntime")
    except PackageNotFoundError:
        try:
            ort = version("onnxruntime-gpu") + " (gpu)"
        except PackageNotFoundError:
            ort = "not installed"
    return f"polyglot-onnx {ours} (onnxruntime {ort}, python {platform.python_version()})"


LOG_LEVELS = ("debug", "info", "warning", "error")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polyglot-onnx", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("--log-level", dest="global_log_level", choices=LOG_LEVELS, default=None,
                        help="library log messages on stderr from this level (default warning; -v = info). "
                             "'serve' has its own --log-level for the server")
    parser.add_argument("-v", "--verbose", action="store_true", help="same as --log-level info")
    sub = parser.add_subparsers(dest="command", required=True)
    add_build_parsers(sub)

    p = sub.add_parser("fill-mask", help="predict the mask token")
    _runtime_args(p)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--targets", help="comma-separated words to score instead of the whole vocabulary")

    p = sub.add_parser("embed", help="sentence, token or word embeddings")
    _runtime_args(p)
    p.add_argument("--pooling", choices=["mean", "cls", "sentence-transformers"], default=None,
                   help="default: the package's")
    p.add_argument("--prompt-name", default=None, help="a prompt the package defines (e.g. query, passage)")
    p.add_argument("--prompt", default=None, help="text prepended to every input, as sentence-transformers does")
    p.add_argument("--dimensions", type=int, default=None, help="Matryoshka: keep the first N dimensions")
    add_precision_args(p)
    p.add_argument("--output", choices=["sentence", "token", "word"], default="sentence")
    p.add_argument("--no-normalize", action="store_true")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--long-text", choices=["truncate", "window"], default="truncate",
                   help="over the model maximum: truncate (warns), or embed whole as overlapping windows")
    p.add_argument("--window-stride", type=int, default=None, help="tokens between windows (default: half a window)")

    p = sub.add_parser("info", help="show a package's manifest summary")
    p.add_argument("package")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("demo", help="export -> fill-mask -> embed; the tiny built-in models when no MODEL")
    p.add_argument("model", nargs="?", default=None, help="catalog name, hub id or checkpoint dir")
    p.add_argument("--out", default="polyglot-demo", help="working directory (default ./polyglot-demo)")
    p.add_argument("--corpus", default=None, help="tokenizer-training text for the tiny models")
    p.add_argument("--random-weights", action="store_true", help="catalog MODEL at full size with random weights")

    add_bench_parser(sub)
    add_serve_parser(sub)
    add_embed_corpus_parser(sub)
    add_verify_parser(sub)
    return parser


def cmd_fill_mask(args: argparse.Namespace) -> int:
    from polyglot_onnx.runtime import FillMask

    fm = FillMask.load(args.package, provider=args.provider, variant=args.variant, threads=args.threads)
    texts = _texts(args)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()] if args.targets else None
    results = fm(texts, top_k=args.top_k, targets=targets)
    if args.json:
        print(json.dumps({"provider": fm.provider, "variant": fm.variant, "results": results}, ensure_ascii=False))
        return 0
    for text, result in zip(texts, results):
        print(text)
        for i, preds in enumerate(result if isinstance(result[0], list) else [result]):
            label = f"  mask {i + 1}:" if isinstance(result[0], list) else " "
            print(label, "  ".join(f"{p['token_str']!r} {p['score']:.3f}" for p in preds))
    return 0


def _records_json(records: Sequence[Any], label: str) -> list[dict[str, Any]]:
    return [
        {label: getattr(r, label), "offsets": r.offsets, "embeddings": r.embeddings.round(6).tolist()}
        for r in records
    ]


def cmd_embed(args: argparse.Namespace) -> int:
    from polyglot_onnx.runtime import Embedder

    emb = Embedder.load(args.package, provider=args.provider, variant=args.variant, threads=args.threads)
    texts = _texts(args)
    out = emb.encode(
        texts, batch_size=args.batch_size, normalize=not args.no_normalize, pooling=args.pooling, output=args.output,
        long_text=args.long_text, window_stride=args.window_stride, prompt_name=args.prompt_name, prompt=args.prompt,
        dimensions=args.dimensions, precision=args.precision, ranges=load_ranges(args.ranges),
    )
    label = {"token": "tokens", "word": "words"}.get(args.output)
    if args.json:
        payload = vectors_json(out) if label is None else _records_json(out, label)
        print(json.dumps({"provider": emb.provider, "variant": emb.variant, "output": args.output,
                          "embeddings": payload}, ensure_ascii=False))
        return 0
    for i, text in enumerate(texts):
        if label is None:
            print(f"{text[:60]!r}: [{', '.join(f'{x:.4f}' for x in out[i][:6])}, ...] dim {out.shape[1]}")
        else:
            print(f"{text[:60]!r}: {len(getattr(out[i], label))} {label} {getattr(out[i], label)[:8]}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from polyglot_onnx.manifest import read_manifest

    manifest = read_manifest(args.package)
    if args.json:
        from polyglot_onnx.runtime.cpu import detect_cpu

        print(json.dumps(manifest.to_dict() | {"this_machine": detect_cpu().to_dict()}, indent=2, ensure_ascii=False))
        return 0
    m = manifest.model
    print(f"{m.name}  ({m.architecture}, {m.num_layers} layers, hidden {m.hidden_size}, vocab {m.vocab_size})")
    print(f"  source: {m.source}")
    print(f"  max length {m.max_length}, pooling {m.default_pooling}, "
          f"{'fill-mask + embeddings' if m.has_mlm_head else 'embeddings only'}, {m.attention} attention")
    if m.sentence_pipeline:
        print(f"  sentence-transformers: {' -> '.join(m.sentence_pipeline)}; prompts: {', '.join(m.prompts) or 'none'}")
    print(f"  mask token: {manifest.tokenizer.mask_token}  inputs: {', '.join(manifest.inputs)}")
    for v in manifest.variants.values():
        print(f"  variant {v.name}: {v.total_size / 1e6:.1f} MB, ops {v.op_counts}")
        try:  # evidence is free-form JSON: a package from elsewhere may hold anything there
            lines = evidence_lines(v)
        except (KeyError, TypeError, ValueError, AttributeError):
            lines = ["    evidence in manifest.json is malformed: re-run 'polyglot-onnx drift' on this package"]
        for line in lines:
            print(line)
    print(f"  built with {', '.join(f'{k} {x}' for k, x in manifest.versions.items())}")
    print("\n".join(machine_lines(manifest)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from polyglot_onnx.demo import run_demo

    if args.random_weights and args.model is None:
        raise PolyglotError("--random-weights needs a catalog MODEL (mbert-cased, mmbert-small, mmbert-base)")
    run_demo(args.model, Path(args.out), Path(args.corpus) if args.corpus else None, args.random_weights)
    return 0




COMMANDS = {
    "export": cmd_export,
    "quantize": cmd_quantize,
    "drift": cmd_drift,
    "fill-mask": cmd_fill_mask,
    "embed": cmd_embed,
    "info": cmd_info,
    "demo": cmd_demo,
    "bench": cmd_bench,
    "serve": cmd_serve,
    "embed-corpus": cmd_embed_corpus,
    "verify": cmd_verify,
}


def _one_line_warning(message: Any, category: type[Warning], *_: Any, **__: Any) -> str:
    return f"warning: {message}\n"


def _configure_logging(args: argparse.Namespace) -> None:
    """The library logs through 'polyglot_onnx' (truncation counts, variant choice, skipped evidence...):
    show it on stderr from the asked level; 'serve' configures its own."""
    import logging

    level = args.global_log_level or ("info" if args.verbose else None)
    if level is None or args.command == "serve":
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(name)s: %(message)s"))
    logger = logging.getLogger("polyglot_onnx")
    logger.addHandler(handler)
    logger.setLevel(getattr(logging, level.upper()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # Texts may follow options ("embed DIR --json 'a text'"): argparse leaves those as extras.
    args, extra = parser.parse_known_args(argv)
    if extra and (not hasattr(args, "texts") or any(e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.texts = list(args.texts) + extra
    warnings.formatwarning = _one_line_warning  # type: ignore[assignment]
    _configure_logging(args)
    if args.command in ("fill-mask", "embed", "info") and stdout_problem():
        print(f"polyglot-onnx: error: {stdout_problem()}", file=sys.stderr)
        return EXIT_ERROR
    try:
        code = COMMANDS[args.command](args)
        if sys.stdout is not None:
            sys.stdout.flush()  # a broken pipe surfaces here, not in Python's exit-time flush
        return code
    except PolyglotError as err:
        print(f"polyglot-onnx: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # the reader went away (| head): stop quietly, as Unix tools do
        return broken_pipe()
    except (OSError, UnicodeError) as err:  # unreadable --file, unwritable stdout and the like
        silence_stdout()
        print(f"polyglot-onnx: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("polyglot-onnx: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
