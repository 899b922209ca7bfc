"""Deployment-time self-check: does this variant reproduce the package's fp32 references on this machine?

The drift evidence in the manifest was measured where the package was built; int8 kernels differ by
CPU (runtime/cpu.py). This re-runs the canary texts (runtime/canary.py) here and applies the
variant's drift gate (polyglot_onnx/gates.py) to what it can measure from stored top-k references:
sentence cosine min / p5, mask top-1 agreement and top-5 overlap, NaN/Inf. KL needs the full
reference distribution, which is not stored, so it is not part of the self-check.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from polyglot_onnx.errors import NoCanaryError, SelfCheckError
from polyglot_onnx.gates import DIRECTIONS, is_failing
from polyglot_onnx.runtime.canary import CanaryOutputs, CanaryReference, read_canary, run_canary
from polyglot_onnx.runtime.cpu import detect_cpu, machine_block
from polyglot_onnx.runtime.engine import Engine, load_engine
from polyglot_onnx.runtime.package import auto_order, has_own_evidence
from polyglot_onnx.runtime.providers import resolve_provider

log = logging.getLogger("polyglot_onnx")

CHECKED = ("sentence_cosine_min", "sentence_cosine_p5", "top1_agreement", "top5_overlap", "nonfinite")
# Rates over a handful of texts move in steps of 1/n (2 texts: 0, 0.5, 1): one near-tie flip would fail
# a language. They are gated overall, and per language only where a language has this many texts.
RATE_METRICS = ("sentence_cosine_p5", "top1_agreement", "top5_overlap")
MIN_TEXTS_FOR_RATES = 8
TIE = 1e-2  # as the drift checker: probabilities within 1% (relative) of the best count as the same top-1
ADD_HINT = "add them with 'polyglot-onnx quantize {root} --canary-only'"


@dataclass(frozen=True)
class SelfCheckReport:
    package: str
    variant: str
    provider: str
    passed: bool
    gate: dict[str, float]
    overall: dict[str, Any]
    by_language: dict[str, dict[str, Any]]
    failures: list[dict[str, Any]]
    seconds: float
    machine: dict[str, Any]
    reference_machine: dict[str, Any]

    def failure_lines(self) -> list[str]:
        return [failure_line(f) for f in self.failures]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"failure_lines": self.failure_lines()}


def failure_line(failure: dict[str, Any]) -> str:
    op = "<" if DIRECTIONS[failure["metric"]] == "min" else ">"
    return (
        f"{failure['variant']} fails on {failure['group']}: {failure['metric']} "
        f"{failure['value']:.4g} {op} {failure['threshold']:.4g}"
    )


def top1_agrees(ref_ids: np.ndarray, ref_p: np.ndarray, var_ids: np.ndarray, var_p: np.ndarray) -> bool:
    """The drift checker's rule (the variant's best is a near-tie of the reference's best), from top-k alone.

    Exact whenever the variant's best is in the reference top-k, or the reference's k-th token is
    already clearly below its best. Only a near-uniform head leaves it open; then the mirror rule
    decides (the reference's best is a near-tie of the variant's best).
    """
    bound = ref_p[0] * (1 - TIE)
    hit = np.flatnonzero(ref_ids == var_ids[0])
    if hit.size:
        return bool(ref_p[hit[0]] >= bound)
    if ref_p[-1] < bound:
        return False
    mirror = np.flatnonzero(var_ids == ref_ids[0])
    return bool(mirror.size and var_p[mirror[0]] >= var_p[0] * (1 - TIE))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    if not np.isfinite(b).all():
        return -1.0
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    denom = np.linalg.norm(a64) * np.linalg.norm(b64)
    return float(a64 @ b64 / denom) if denom > 0 else 0.0


def per_text(ref: CanaryReference, out: CanaryOutputs) -> list[dict[str, Any]]:
    rows = []
    r, v = ref.outputs, out
    for i, t in enumerate(ref.texts):
        row: dict[str, Any] = {
            "language": t.language,
            "cosine": _cosine(r.sentence[i], v.sentence[i]),
            "nonfinite": int(v.nonfinite[i]),
        }
        if r.top_ids is not None and r.top_probs is not None and v.top_ids is not None and v.top_probs is not None:
            row["top1"] = float(top1_agrees(r.top_ids[i], r.top_probs[i], v.top_ids[i], v.top_probs[i]))
            row["top5"] = len(set(r.top_ids[i, :5].tolist()) & set(v.top_ids[i, :5].tolist())) / 5
        rows.append(row)
    return rows


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    cos = np.array([r["cosine"] for r in rows])
    out: dict[str, Any] = {
        "texts": len(rows),
        "sentence_cosine_mean": float(cos.mean()),
        "sentence_cosine_p5": float(np.percentile(cos, 5)),
        "sentence_cosine_min": float(cos.min()),
        "nonfinite": int(sum(r["nonfinite"] for r in rows)),
    }
    if "top1" in rows[0]:
        out["top1_agreement"] = float(np.mean([r["top1"] for r in rows]))
        out["top5_overlap"] = float(np.mean([r["top5"] for r in rows]))
    return out


def evaluate(
    variant: str, overall: dict[str, Any], by_language: dict[str, dict[str, Any]], gate: dict[str, float]
) -> list[dict[str, Any]]:
    """Every (group, metric) outside its threshold; rates per language only where there are enough texts."""
    failures = []
    groups = [("overall", overall, True)] + [
        (f"language {k}", v, v["texts"] >= MIN_TEXTS_FOR_RATES) for k, v in by_language.items()
    ]
    for group, figures, rates in groups:
        for metric, threshold in gate.items():
            if metric not in figures or (metric in RATE_METRICS and not rates):
                continue
            if is_failing(metric, figures[metric], threshold):
                value = figures[metric]
                failures.append(
                    {"variant": variant, "group": group, "metric": metric, "value": value, "threshold": threshold}
                )
    return failures


def load_reference(engine: Engine) -> CanaryReference:
    """The package's canary references, refusing a package without them or with stale ones."""
    root, manifest = engine.package.root, engine.manifest
    if manifest.canary is None:
        raise NoCanaryError(
            f"{root} has no canary references, so nothing can be checked on this machine: "
            + ADD_HINT.format(root=root)
        )
    reference = read_canary(engine.package)
    fp32 = manifest.variants.get("fp32")
    if fp32 is not None and reference.meta.get("fp32_sha256") not in (None, fp32.files[0].sha256):
        raise SelfCheckError(
            f"{manifest.canary.path} was made from another fp32 graph than this package's: recreate it with "
            f"'polyglot-onnx quantize {root} --canary-only'"
        )
    return reference


def check_engine(engine: Engine) -> SelfCheckReport:
    """Run the canary set through ``engine`` and gate it against the stored fp32 references."""
    import json

    reference = load_reference(engine)
    start = time.perf_counter()
    out, _ = run_canary(engine, reference.texts, reference.mask_at or None)
    seconds = time.perf_counter() - start
    rows = per_text(reference, out)
    by_language: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_language.setdefault(row["language"], []).append(row)
    languages = {k: aggregate(v) for k, v in sorted(by_language.items())}
    overall = aggregate(rows)
    gate = {k: v for k, v in engine.package.variant.drift_gate().items() if k in CHECKED}
    failures = evaluate(engine.variant, overall, languages, gate)
    return SelfCheckReport(
        package=str(engine.package.root),
        variant=engine.variant,
        provider=engine.provider,
        passed=not failures,
        gate=gate,
        overall=overall,
        by_language=languages,
        failures=failures,
        seconds=round(seconds, 4),
        machine=machine_block(engine.provider),
        reference_machine=json.loads(reference.meta.get("machine", "{}")),
    )


def verify_package(
    directory: str | os.PathLike[str],
    variant: str = "auto",
    provider: str = "auto",
    threads: int | None = None,
    verify: bool = True,
) -> SelfCheckReport:
    """``polyglot-onnx verify``: the chosen variant against the package's references, on this machine."""
    return check_engine(load_engine(directory, provider, variant, threads, verify, warn_evidence=False))


def _summary(report: SelfCheckReport) -> str:
    """One line: which languages fail, and the first failing figure."""
    lines = report.failure_lines()
    if not lines:
        return "passed"
    langs = sorted({f["group"].removeprefix("language ") for f in report.failures if f["group"] != "overall"})
    shown = ", ".join(langs[:8]) + (", ..." if len(langs) > 8 else "")
    where = f"{len(langs)} of {len(report.by_language)} languages fail ({shown})" if langs else "fails overall"
    return f"{where}; first: {lines[0]}"


def load_checked(
    directory: str | os.PathLike[str], provider: str, variant: str, threads: int | None, verify: bool,
    memory_arena: bool = True,
) -> Engine:
    """Load and self-check; ``variant='auto'`` walks the preference order until a variant passes."""
    choice = resolve_provider(provider)
    kernel = detect_cpu().int8_kernel_class
    if variant != "auto":
        engine = load_engine(directory, choice.name, variant, threads, verify, warn_evidence=False,
                             memory_arena=memory_arena)
        report = check_engine(engine)
        if not report.passed:
            raise SelfCheckError(
                f"variant {variant} fails its self-check on this machine ({kernel}): {_summary(report)}; "
                f"run 'polyglot-onnx verify {directory} --variant {variant}' for every figure, or use another variant"
            )
        return engine
    from polyglot_onnx.manifest import read_manifest

    manifest = read_manifest(Path(directory).expanduser())
    if manifest.canary is None:
        raise NoCanaryError(
            f"{directory} has no canary references, so self_check cannot measure anything: "
            + ADD_HINT.format(root=directory)
        )
    reasons: list[str] = []
    for name in auto_order(manifest, choice.name):
        found = manifest.variants.get(name)
        # what auto itself skips (no evidence of its own, or a failed drift gate) is not tried either
        if found is None:
            continue
        evidence = found.evidence_for(choice.name)[1]
        if name != "fp32" and (not has_own_evidence(found, choice.name) or (evidence or {}).get("passed") is False):
            continue
        engine = load_engine(directory, choice.name, name, threads, verify, warn_evidence=False,
                             memory_arena=memory_arena)
        report = check_engine(engine)
        if report.passed:
            log.info("self-check: %s passed on this machine (%s) in %.3f s", name, kernel, report.seconds)
            return engine
        reasons.append(f"{name}: {_summary(report)}")
        log.warning("self-check: variant %s fails on this machine (%s): %s; trying the next variant",
                    name, kernel, _summary(report))
    raise SelfCheckError(
        f"no variant of {directory} passes its self-check on this machine ({kernel}): "
        f"{'; '.join(reasons) or 'none to try'}"
    )
