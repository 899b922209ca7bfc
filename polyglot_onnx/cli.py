"""``polyglot-onnx``: export | fill-mask | embed | info | demo.

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

from polyglot_onnx.errors import PolyglotError

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
    """Texts from the command line, or one per line from --file (- for stdin)."""
    if args.file:
        raw = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
        texts = [line for line in raw.splitlines() if line.strip()]
    else:
        texts = list(args.texts)
    if not texts:
        raise PolyglotError("no input text: pass texts as arguments or --file FILE (one per line)")
    return texts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polyglot-onnx", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

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

    p = sub.add_parser("fill-mask", help="predict the mask token")
    _runtime_args(p)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--targets", help="comma-separated words to score instead of the whole vocabulary")

    p = sub.add_parser("embed", help="sentence, token or word embeddings")
    _runtime_args(p)
    p.add_argument("--pooling", choices=["mean", "cls"], default=None, help="default: the package's")
    p.add_argument("--output", choices=["sentence", "token", "word"], default="sentence")
    p.add_argument("--no-normalize", action="store_true")
    p.add_argument("--batch-size", type=int, default=32)

    p = sub.add_parser("info", help="show a package's manifest summary")
    p.add_argument("package")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("demo", help="export -> fill-mask -> embed; the tiny built-in models when no MODEL")
    p.add_argument("model", nargs="?", default=None, help="catalog name, hub id or checkpoint dir")
    p.add_argument("--out", default="polyglot-demo", help="working directory (default ./polyglot-demo)")
    p.add_argument("--corpus", default=None, help="tokenizer-training text for the tiny models")
    p.add_argument("--random-weights", action="store_true", help="catalog MODEL at full size with random weights")
    return parser


def cmd_export(args: argparse.Namespace) -> int:
    from polyglot_onnx.export import ExportOptions, Tolerance, export_package

    options = ExportOptions(
        tolerance=Tolerance(atol=args.atol, rtol=args.rtol),
        trust_remote_code=args.trust_remote_code,
        overwrite=args.overwrite,
        show_progress=not args.quiet,
        random_weights=args.random_weights,
    )
    export_package(args.model, args.out, options)
    return 0


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
        texts, batch_size=args.batch_size, normalize=not args.no_normalize, pooling=args.pooling, output=args.output
    )
    label = {"token": "tokens", "word": "words"}.get(args.output)
    if args.json:
        payload = out.round(6).tolist() if label is None else _records_json(out, label)
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
        print(json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False))
        return 0
    m = manifest.model
    print(f"{m.name}  ({m.architecture}, {m.num_layers} layers, hidden {m.hidden_size}, vocab {m.vocab_size})")
    print(f"  source: {m.source}")
    print(f"  max length {m.max_length}, pooling {m.default_pooling}, "
          f"{'fill-mask + embeddings' if m.has_mlm_head else 'embeddings only'}")
    print(f"  mask token: {manifest.tokenizer.mask_token}  inputs: {', '.join(manifest.inputs)}")
    for v in manifest.variants.values():
        val = v.validation
        diffs = ", ".join(f"{k} {x:.1e}" for k, x in val.get("max_abs_diff", {}).items())
        print(f"  variant {v.name}: {v.total_size / 1e6:.1f} MB, ops {v.op_counts}")
        if val:
            print(f"    validated against {val.get('reference')}: max abs diff {diffs}")
    print(f"  built with {', '.join(f'{k} {x}' for k, x in manifest.versions.items())}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from polyglot_onnx.demo import run_demo

    if args.random_weights and args.model is None:
        raise PolyglotError("--random-weights needs a catalog MODEL (mbert-cased, mmbert-small, mmbert-base)")
    run_demo(args.model, Path(args.out), Path(args.corpus) if args.corpus else None, args.random_weights)
    return 0


COMMANDS = {"export": cmd_export, "fill-mask": cmd_fill_mask, "embed": cmd_embed, "info": cmd_info, "demo": cmd_demo}


def _one_line_warning(message: Any, category: type[Warning], *_: Any, **__: Any) -> str:
    return f"warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # Texts may follow options ("embed DIR --json 'a text'"): argparse leaves those as extras.
    args, extra = parser.parse_known_args(argv)
    if extra and (not hasattr(args, "texts") or any(e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.texts = list(args.texts) + extra
    warnings.formatwarning = _one_line_warning  # type: ignore[assignment]
    try:
        return COMMANDS[args.command](args)
    except PolyglotError as err:
        print(f"polyglot-onnx: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except (OSError, UnicodeDecodeError) as err:  # unreadable --file and the like
        print(f"polyglot-onnx: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("polyglot-onnx: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
