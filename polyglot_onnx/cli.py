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
from polyglot_onnx.cli_io import broken_pipe, evidence_lines, read_texts, silence_stdout, stdout_problem
from polyglot_onnx.cli_precision import add_precision_args, load_ranges, vectors_json
from polyglot_onnx.errors import PolyglotError
from polyglot_onnx.jobs.cli import add_embed_corpus_parser, cmd_embed_corpus
from polyglot_onnx.selfcheck_cli import add_verify_parser, cmd_canary_only, cmd_verify, machine_lines
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


def _quantize_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-drift", type=float, default=None,
                   help="int8: keep the most sensitive MatMuls in fp32 until the token-embedding drift is below this")
    p.add_argument("--corpus", default=None, help="calibration / drift text (default: the built-in corpus)")
    p.add_argument("--per-tensor", action="store_true", help="int8 weights per tensor instead of per channel")
    p.add_argument("--reduce-range", action="store_true", help="7-bit int8 weights (for CPUs without VNNI)")
    p.add_argument("--embedding-block", type=int, default=64, help="int8 embedding block size; 0 keeps it fp32")
    p.add_argument("--no-drift", action="store_true", help="skip the drift check after building")
    p.add_argument("--no-canary", action="store_true", help="store no canary references for 'polyglot-onnx verify'")
    p.add_argument("--threads", type=int, default=None)
    if not any(a.dest == "overwrite" for a in p._actions):
        p.add_argument("--overwrite", action="store_true", help="rebuild variants the package already has")
    if not any(a.dest == "quiet" for a in p._actions):
        p.add_argument("--quiet", action="store_true", help="no progress lines")


def _quantize_options(args: argparse.Namespace) -> Any:
    from polyglot_onnx.quantize import Int8Options, QuantizeOptions

    if args.embedding_block < 0:
        raise PolyglotError(f"--embedding-block must be 0 (fp32 table) or a power of two >= 16, got {args.embedding_block}")
    return QuantizeOptions(
        int8=Int8Options(
            per_channel=not args.per_tensor, reduce_range=args.reduce_range, embedding_block=args.embedding_block
        ),
        overwrite=args.overwrite,
        corpus=args.corpus,
        drift=not args.no_drift,
        max_drift=args.max_drift,
        threads=args.threads,
        show_progress=not args.quiet,
        canary=not args.no_canary,
    )


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
    from polyglot_onnx.quantize.recipes import DEFAULT_VARIANTS, names_help  # the table, not the quantizers

    recipe_names, default_variants = names_help(), ",".join(DEFAULT_VARIANTS)

    p = sub.add_parser("export", help="checkpoint -> validated fp32 ONNX package")
    p.add_argument("model", help="catalog name (mbert-cased, mmbert-small, mmbert-base), hub id or local directory")
    p.add_argument("--out", required=True, help="package directory to create")
    p.add_argument("--atol", type=float, default=1e-4, help="validation absolute tolerance")
    p.add_argument("--rtol", type=float, default=1e-3, help="validation relative tolerance")
    p.add_argument("--overwrite", action="store_true", help="replace an existing package at --out")
    p.add_argument("--trust-remote-code", action="store_true", help="allow checkpoint code (off by default)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--random-weights", action="store_true",
                   help="catalog model only: build the exact architecture with random weights (no download)")
    p.add_argument("--dense-attention", action="store_true",
                   help="ModernBERT: local layers as dense band-masked attention (default: banded, for comparison)")
    p.add_argument("--variants", default="fp32",
                   help=f"fp32 plus any of {recipe_names}, built after export (e.g. fp32,{default_variants})")
    _quantize_args(p)

    p = sub.add_parser("quantize", help="add int8 / fp16 variants to a package, with drift evidence")
    p.add_argument("package", help="package directory made by 'polyglot-onnx export'")
    p.add_argument("--variants", default=None,
                   help=f"comma-separated: {recipe_names} (default {default_variants})")
    p.add_argument("--canary-only", action="store_true", help="only (re)write the canary references; build nothing")
    _quantize_args(p)

    p = sub.add_parser("drift", help="measure each variant's accuracy drift per language; exit 1 if a gate fails")
    p.add_argument("package")
    p.add_argument("--reference", choices=["fp32", "torch"], default="fp32",
                   help="the package's fp32 graph (no torch needed) or the PyTorch checkpoint")
    p.add_argument("--corpus", default=None, help="text file (one per line) or JSONL {text, language}; default built-in")
    p.add_argument("--variants", default=None, help="comma-separated (default: every variant but the reference)")
    p.add_argument("--threshold", action="append", default=[], metavar="METRIC=VALUE",
                   help="override a gate, e.g. top1_agreement=0.9 (repeatable; see docs/quantize.md)")
    p.add_argument("--localize", choices=["failing", "always", "never"], default="failing",
                   help="per-layer divergence search (default: for failing variants)")
    p.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="write the full report as JSON")
    p.add_argument("--markdown", default=None, metavar="OUT", help="write a Markdown report and OUT.png plot")
    p.add_argument("--no-record", action="store_true", help="do not write the results into manifest.json")
    p.add_argument("--provider", choices=["cpu", "cuda"], default="cpu",
                   help="run the variants there (the fp32 reference stays on the CPU); the evidence is recorded "
                        "per provider and variant='auto' on CUDA uses the CUDA evidence")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quiet", action="store_true")

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


def cmd_export(args: argparse.Namespace) -> int:
    from polyglot_onnx.export import ExportOptions, Tolerance, export_package
    from polyglot_onnx.quantize.recipes import parse_variants

    variants = parse_variants(args.variants, allow_fp32=True)
    extra = [v for v in variants if v != "fp32"]
    quantize_options = _quantize_options(args) if extra else None

    options = ExportOptions(
        tolerance=Tolerance(atol=args.atol, rtol=args.rtol),
        trust_remote_code=args.trust_remote_code,
        overwrite=args.overwrite,
        show_progress=not args.quiet,
        random_weights=args.random_weights,
        canary=not args.no_canary,
        banded_attention=not args.dense_attention,
    )
    export_package(args.model, args.out, options)
    if extra:
        from polyglot_onnx.quantize import quantize_package

        quantize_package(args.out, extra, quantize_options)
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from polyglot_onnx.quantize import quantize_package
    from polyglot_onnx.quantize.recipes import DEFAULT_VARIANTS

    if args.canary_only:
        return cmd_canary_only(args)
    manifest = quantize_package(args.package, args.variants or list(DEFAULT_VARIANTS), _quantize_options(args))
    failed = [n for n, v in manifest.variants.items() if (v.drift() or {}).get("passed") is False]
    if failed:
        hint = " or rebuild int8 with --overwrite --max-drift 0.05 (keeps sensitive MatMuls in fp32)" if "int8" in failed else ""
        print(f"polyglot-onnx: drift gate failed for {', '.join(failed)} (variant='auto' will not pick it): see "
              f"'polyglot-onnx drift {args.package} --markdown report.md'{hint}", file=sys.stderr)
        return EXIT_ERROR
    return 0


def _thresholds(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        metric, sep, value = item.partition("=")
        try:
            out[metric.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise PolyglotError(f"--threshold {item!r} is not METRIC=NUMBER: e.g. --threshold top1_agreement=0.9")
    return out


def cmd_drift(args: argparse.Namespace) -> int:
    from polyglot_onnx.quantize.drift import DriftOptions, failure_line, record, run_drift
    from polyglot_onnx.quantize.recipes import parse_variants

    variants = tuple(parse_variants(args.variants, allow_fp32=True)) if args.variants else ()
    options = DriftOptions(
        reference=args.reference,
        corpus=args.corpus,
        variants=variants,
        thresholds=_thresholds(args.threshold),
        batch_size=args.batch_size,
        localize=args.localize,
        threads=args.threads,
        show_progress=not args.quiet,
        provider=args.provider,
    )
    report = run_drift(args.package, options)
    if args.json_out:
        from polyglot_onnx.quantize.report import write_json

        write_json(report, Path(args.json_out))
    if args.markdown:
        from polyglot_onnx.quantize.report import write_markdown

        image = write_markdown(report, Path(args.markdown))
        print(f"report: {args.markdown} (plot {image})", file=sys.stderr)
    if not args.no_record:
        record(args.package, report)
    for name, result in report.variants.items():
        o = result["overall"]
        fill = f", top-1 {o['top1_agreement']:.3f}, KL {o['kl_mean']:.2e}" if "top1_agreement" in o else ""
        loc = result.get("localization") or {}
        where = f"; first diverging layer {loc['diverges_at']}" if loc.get("diverges_at") is not None else ""
        print(f"{name}: {'PASS' if result['passed'] else 'FAIL'}  cos mean {o['sentence_cosine_mean']:.5f} "
              f"p5 {o['sentence_cosine_p5']:.5f} min {o['sentence_cosine_min']:.5f}{fill}{where}")
    for failure in report.failures:
        print(f"polyglot-onnx: {failure_line(failure)}", file=sys.stderr)
    return 0 if report.passed else EXIT_ERROR


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
