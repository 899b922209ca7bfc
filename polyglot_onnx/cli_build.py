"""The build commands: ``export``, ``quantize`` and ``drift`` (checkpoint -> package -> variants -> evidence).

Kept apart from the runtime commands in cli.py; like them, heavy imports (torch, onnx, the quantizers)
happen inside the command that needs them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from polyglot_onnx.errors import PolyglotError
from polyglot_onnx.selfcheck_cli import cmd_canary_only

EXIT_ERROR = 1


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


def add_build_parsers(sub: Any) -> None:
    """export, quantize and drift, on the CLI's subparsers."""
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
