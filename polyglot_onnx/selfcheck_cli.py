"""``polyglot-onnx verify`` and ``quantize --canary-only``: the deployment self-check from the command line.

Exit codes of ``verify``: 0 the variant passes its gate here, 1 it fails (one line per failing
language / metric on stderr), 2 nothing was measured (no canary references in the package).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from polyglot_onnx.manifest import DRIFT_PROVIDERS

EXIT_FAIL = 1
EXIT_NOT_MEASURED = 2


def add_verify_parser(sub: Any) -> None:
    p = sub.add_parser("verify", help="re-run a variant on this machine against the package's canary references")
    p.add_argument("package", help="package directory made by 'polyglot-onnx export'")
    p.add_argument("--variant", default="auto", help="auto (what the runtime would load here), fp32, int8, ...")
    p.add_argument("--provider", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", action="store_true", help="the full report as JSON on stdout")


def cmd_verify(args: argparse.Namespace) -> int:
    from polyglot_onnx.errors import NoCanaryError
    from polyglot_onnx.runtime.selfcheck import verify_package

    try:
        report = verify_package(args.package, args.variant, args.provider, args.threads)
    except NoCanaryError as err:
        print(f"polyglot-onnx: not verified: {err}", file=sys.stderr)
        return EXIT_NOT_MEASURED
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        o = report.overall
        fill = f", top-1 {o['top1_agreement']:.3f}, top-5 {o['top5_overlap']:.3f}" if "top1_agreement" in o else ""
        print(
            f"{report.variant}: {'PASS' if report.passed else 'FAIL'} on this machine "
            f"({report.machine.get('int8_kernel_class')}, {report.provider}; references from "
            f"{report.reference_machine.get('int8_kernel_class', 'unknown')}): {o['texts']} texts, "
            f"{len(report.by_language)} languages, cos min {o['sentence_cosine_min']:.5f} "
            f"p5 {o['sentence_cosine_p5']:.5f}{fill}, NaN/Inf {o['nonfinite']} ({report.seconds:.3f} s)"
        )
    for line in report.failure_lines():
        print(f"polyglot-onnx: {line}", file=sys.stderr)
    return 0 if report.passed else EXIT_FAIL


def cmd_canary_only(args: argparse.Namespace) -> int:
    """``quantize DIR --canary-only``: (re)write the references without touching any variant."""
    from pathlib import Path

    from polyglot_onnx.manifest import read_manifest
    from polyglot_onnx.quantize.package import ensure_canary

    root = Path(args.package).expanduser()
    manifest = ensure_canary(root, read_manifest(root), refresh=True)
    entry = manifest.canary
    if not args.quiet and entry is not None:
        print(f"{entry.path}: {entry.size / 1e3:.0f} kB of fp32 references; check a variant with "
              f"'polyglot-onnx verify {root} --variant int8'", file=sys.stderr)
    return 0


def machine_lines(manifest: Any) -> list[str]:
    """For ``info``: this machine's int8 kernel class, and where each variant's evidence was measured."""
    from polyglot_onnx.runtime.cpu import detect_cpu

    cpu = detect_cpu()
    lines = [f"  this machine: {cpu.arch}, int8 kernels {cpu.int8_kernel_class} "
             f"({', '.join(cpu.features) or 'no int8 features found'}; read from {cpu.source})"]
    for v in manifest.variants.values():
        for provider in DRIFT_PROVIDERS:
            machine = (v.drift(provider) or {}).get("machine")
            if machine:
                lines.append(f"  {v.name} evidence measured on: {machine.get('int8_kernel_class')} "
                             f"(onnxruntime {machine.get('onnxruntime')}, {machine.get('provider')})")
    lines.append(f"  canary references: {manifest.canary.path if manifest.canary else 'none'}"
                 + ("" if manifest.canary else " (add with 'polyglot-onnx quantize DIR --canary-only')"))
    return lines
