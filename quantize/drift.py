"""The drift checker: what each variant costs in accuracy, per language and script.

Every variant runs on the same multilingual corpus as a reference (the package's own fp32 graph,
or the PyTorch checkpoint), text by text; the per-text figures are aggregated overall, per
language and per script, checked against per-variant gates, and for a failing variant the first
encoder layer whose hidden state diverges is located by exposing each layer's output.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from polyglot_onnx import manifest as mf
from polyglot_onnx.errors import InputError, ModelNotFoundError
from polyglot_onnx.gates import DEFAULT_GATES, gate_for  # noqa: F401 - re-exported: the gate table is plain data
from polyglot_onnx.progress import Progress
from polyglot_onnx.quantize.corpus import Corpus, load_corpus
from polyglot_onnx.quantize.localize import SQNR_FLOOR_DB, localize
from polyglot_onnx.quantize.metrics import DIRECTIONS, TextDrift, aggregate, grouped, text_drift
from polyglot_onnx.runtime.embedder import POOLING_OUTPUTS
from polyglot_onnx.runtime.text import length_sorted_batches, pad_ids

REFERENCES = ("fp32", "torch")

def check_thresholds(overrides: dict[str, float]) -> None:
    """Thresholds out of range are refused before any work starts."""
    for metric, value in overrides.items():
        if metric not in DIRECTIONS:
            raise InputError(f"unknown drift metric {metric!r}: choose from {', '.join(DIRECTIONS)}")
        if not np.isfinite(value):
            raise InputError(f"threshold for {metric} must be a finite number, got {value}")
        bounded = metric.startswith(("sentence_cosine", "top"))
        if bounded and not (-1.0 if "cosine" in metric else 0.0) <= value <= 1.0:
            raise InputError(f"threshold for {metric} must lie in [{-1 if 'cosine' in metric else 0}, 1], got {value}")
        if not bounded and value < 0:
            raise InputError(f"threshold for {metric} must be >= 0, got {value}")


@dataclass(frozen=True)
class DriftOptions:
    reference: str = "fp32"
    corpus: str | None = None  # None -> built-in corpus
    variants: tuple[str, ...] = ()  # () -> every variant but the reference
    thresholds: dict[str, float] = field(default_factory=dict)
    batch_size: int = 16
    localize: str = "failing"  # failing | always | never
    sqnr_floor: float = SQNR_FLOOR_DB
    threads: int | None = None
    show_progress: bool = True
    provider: str = "cpu"  # where the variants run (the reference stays fp32 on the CPU); cuda: fp16 where it runs
    nested_progress: bool = False  # inside another command's step (quantize): indented lines, no overall bar


class Runner(Protocol):
    def __call__(self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray | None) -> dict[str, np.ndarray]: ...


def _pooling_output(manifest: mf.Manifest) -> str:
    return POOLING_OUTPUTS[manifest.model.default_pooling]


class OnnxRunner:
    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.outputs = [mf.TOKEN_EMBEDDINGS, _pooling_output(engine.manifest)]
        if engine.manifest.model.has_mlm_head:
            self.outputs.append(mf.MASK_LOGITS)
        self.seconds = 0.0

    def __call__(self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray | None) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        wanted = self.outputs if positions is not None else self.outputs[:2]
        values = self.engine.run(wanted, ids, mask, positions)
        self.seconds += time.perf_counter() - start
        return dict(zip(wanted, values))


class TorchRunner:
    """The checkpoint the package came from, through the export's own wrapper module."""

    def __init__(self, manifest: mf.Manifest) -> None:
        from polyglot_onnx.export.graph import build_module
        from polyglot_onnx.export.loading import load_checkpoint

        source = manifest.model.source
        if source.startswith("random-weights:"):
            raise InputError(
                "this package was exported from random weights, so there is no PyTorch checkpoint to compare "
                "with: use --reference fp32"
            )
        try:
            checkpoint = load_checkpoint(source)
        except ModelNotFoundError as err:
            raise ModelNotFoundError(f"--reference torch: {err}") from err
        self.module = build_module(checkpoint)
        self.token_types = checkpoint.strategy.needs_token_type_ids
        self.pooling = _pooling_output(manifest)
        self.seconds = 0.0

    def __call__(self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray | None) -> dict[str, np.ndarray]:
        import torch

        start = time.perf_counter()
        args = [torch.from_numpy(ids), torch.from_numpy(mask)]
        if positions is not None:
            args.append(torch.from_numpy(positions))
        elif hasattr(self.module, "decoder"):  # the head always runs: give it zero rows
            args.append(torch.zeros(0, dtype=torch.long))
        with torch.no_grad():
            outs = [o.numpy() for o in self.module(*args)]
        self.seconds += time.perf_counter() - start
        names = [mf.TOKEN_EMBEDDINGS, mf.SENTENCE_EMBEDDING, mf.CLS_EMBEDDING, mf.MASK_LOGITS]
        values = dict(zip(names, outs))
        out = {mf.TOKEN_EMBEDDINGS: values[mf.TOKEN_EMBEDDINGS], self.pooling: values[self.pooling]}
        if positions is not None:
            out[mf.MASK_LOGITS] = values[mf.MASK_LOGITS]
        return out


@dataclass
class Encoded:
    """The corpus tokenized once: plain ids, and a masked copy (middle content token) for fill-mask."""

    ids: list[list[int]]
    masked: list[list[int]] | None
    mask_at: list[int]


def encode_corpus(engine: Any, corpus: Corpus) -> Encoded:
    import warnings

    from polyglot_onnx.errors import TruncationWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        encodings = engine.text.encode([s.text for s in corpus.samples])
    ids = [list(e.ids) for e in encodings]
    info = engine.manifest.tokenizer
    if not engine.manifest.model.has_mlm_head or info.mask_token_id is None:
        return Encoded(ids, None, [])
    masked, mask_at = [], []
    for enc in encodings:
        content = [i for i, special in enumerate(enc.special_tokens_mask) if not special]
        if not content:
            raise InputError("a corpus text has no content tokens after tokenization: remove empty lines")
        at = content[len(content) // 2]
        row = list(enc.ids)
        row[at] = int(info.mask_token_id)
        masked.append(row)
        mask_at.append(at)
    return Encoded(ids, masked, mask_at)


def compare(
    reference: Runner,
    variants: dict[str, Runner],
    corpus: Corpus,
    encoded: Encoded,
    pad_id: int,
    batch_size: int,
    progress: Progress,
) -> dict[str, list[TextDrift]]:
    """Per-text drift of every variant; logits never accumulate (256k-wide rows stay per batch)."""
    rows: dict[str, list[TextDrift | None]] = {name: [None] * len(corpus.samples) for name in variants}
    sentence_key = None
    batches = length_sorted_batches([len(r) for r in encoded.ids], batch_size)
    bar = progress.bar(len(batches), "drift", unit="batch")
    for done, batch in enumerate(batches, 1):
        ids, mask = pad_ids([encoded.ids[i] for i in batch], pad_id)
        ref = reference(ids, mask, None)
        sentence_key = sentence_key or next(k for k in ref if k != mf.TOKEN_EMBEDDINGS)
        ref_logits = var_logits = None
        if encoded.masked is not None:
            m_ids, m_mask = pad_ids([encoded.masked[i] for i in batch], pad_id)
            positions = np.array([r * m_ids.shape[1] + encoded.mask_at[i] for r, i in enumerate(batch)], np.int64)
            ref_logits = reference(m_ids, m_mask, positions)[mf.MASK_LOGITS]
        for name, runner in variants.items():
            out = runner(ids, mask, None)
            if encoded.masked is not None:
                var_logits = runner(m_ids, m_mask, positions)[mf.MASK_LOGITS]
            for r, i in enumerate(batch):
                n = len(encoded.ids[i])
                sample = corpus.samples[i]
                rows[name][i] = text_drift(
                    sample.language,
                    sample.script,
                    ref[mf.TOKEN_EMBEDDINGS][r, :n],
                    out[mf.TOKEN_EMBEDDINGS][r, :n],
                    ref[sentence_key][r],
                    out[sentence_key][r],
                    (ref_logits[r], var_logits[r]) if ref_logits is not None and var_logits is not None else None,
                )
        bar.update(1)
        if done % max(1, len(batches) // 5) == 0 or done == len(batches):
            progress.info(f"{done}/{len(batches)} batches")
    bar.close()
    return {name: [r for r in got if r is not None] for name, got in rows.items()}


def evaluate_gate(variant: str, overall: dict[str, Any], by_language: dict[str, Any], gate: dict[str, float]) -> list[dict[str, Any]]:
    """Every (group, metric) outside its threshold; groups are 'overall' and each language."""
    failures = []
    groups = {"overall": overall} | {f"language {k}": v for k, v in by_language.items()}
    for group, figures in groups.items():
        for metric, threshold in gate.items():
            if metric not in figures:
                continue
            value = figures[metric]
            bad = value < threshold if DIRECTIONS[metric] == "min" else value > threshold
            if bad:
                failures.append(
                    {"variant": variant, "group": group, "metric": metric, "value": value, "threshold": threshold}
                )
    return failures


def failure_line(failure: dict[str, Any]) -> str:
    op = "<" if DIRECTIONS[failure["metric"]] == "min" else ">"
    return (
        f"{failure['variant']} fails on {failure['group']}: {failure['metric']} "
        f"{failure['value']:.4g} {op} {failure['threshold']:.4g}"
    )


@dataclass
class DriftReport:
    package: str
    reference: str
    corpus: dict[str, Any]
    variants: dict[str, dict[str, Any]]
    checked: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    machine: dict[str, Any] = field(default_factory=dict)  # CPU int8 kernel class, onnxruntime, provider
    provider: str = "cpu"  # where the variants ran: the evidence is recorded under manifest.drift_key(provider)

    @property
    def passed(self) -> bool:
        return all(v["passed"] for v in self.variants.values())

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [f for v in self.variants.values() for f in v["failures"]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "package": Path(self.package).name,  # results carry no machine paths
            "reference": self.reference,
            "corpus": self.corpus,
            "checked": self.checked,
            "machine": self.machine,
            "provider": self.provider,
            "passed": self.passed,
            "variants": self.variants,
        }


def _targets(manifest: mf.Manifest, options: DriftOptions) -> list[str]:
    available = list(manifest.variants)
    wanted = list(options.variants) or [v for v in available if v != "fp32" or options.reference == "torch"]
    for name in wanted:
        if name not in available:
            raise InputError(f"variant {name!r} is not in this package: it has {', '.join(available)}")
        if name == "fp32" and options.reference == "fp32":
            raise InputError("fp32 cannot be checked against itself: use --reference torch, or leave fp32 out")
    if not wanted:
        raise InputError(
            "the package has only the fp32 variant: add variants with 'polyglot-onnx quantize DIR' "
            "or check fp32 against PyTorch with --reference torch"
        )
    return wanted


def run_drift(directory: str | Path, options: DriftOptions | None = None) -> DriftReport:
    """Measure every requested variant against the reference on the corpus."""
    from polyglot_onnx.runtime.engine import load_engine

    options = options or DriftOptions()
    if options.reference not in REFERENCES:
        raise InputError(f"unknown reference {options.reference!r}: choose fp32 or torch")
    if options.provider not in mf.DRIFT_PROVIDERS:
        raise InputError(f"unknown provider {options.provider!r}: choose {' or '.join(mf.DRIFT_PROVIDERS)}")
    if options.localize not in ("failing", "always", "never"):
        raise InputError(f"localize must be failing, always or never, not {options.localize!r}")
    check_thresholds(options.thresholds)
    root = Path(directory)
    manifest = mf.read_manifest(root)
    targets = _targets(manifest, options)
    corpus = load_corpus(options.corpus)
    progress = Progress(total=3, enabled=options.show_progress, nested=options.nested_progress, label="drift")

    with progress.step(f"loading reference ({options.reference}) and {', '.join(targets)}"):
        # the reference is always the validated fp32 graph on the CPU (or PyTorch); the variants run where asked
        ref_engine = load_engine(root, "cpu", "fp32", options.threads)
        reference: Any = TorchRunner(manifest) if options.reference == "torch" else OnnxRunner(ref_engine)
        runners = {
            name: OnnxRunner(load_engine(root, options.provider, name, options.threads, refuse_unfit=False))
            for name in targets
        }
        encoded = encode_corpus(ref_engine, corpus)
        info = corpus.describe()
        progress.info(f"corpus {info['name']}: {info['texts']} texts, {info['languages']} languages, {info['scripts']} scripts")
    with progress.step(f"running {len(corpus.samples)} texts (plain + masked) through every variant"):
        rows = compare(
            reference, runners, corpus, encoded, manifest.tokenizer.pad_token_id, options.batch_size, progress
        )
    results: dict[str, dict[str, Any]] = {}
    with progress.step("aggregating, gating and localizing"):
        for name, got in rows.items():
            overall = aggregate(got)
            by_language = grouped(got, "language")
            gate = manifest.variants[name].drift_gate(options.thresholds)
            failures = evaluate_gate(name, overall, by_language, gate)
            results[name] = {
                "passed": not failures,
                "gate": gate,
                "overall": overall,
                "by_language": by_language,
                "by_script": grouped(got, "script"),
                "failures": failures,
                "seconds": round(runners[name].seconds, 3),
                "reference_seconds": round(reference.seconds, 3),
                "localization": None,
                # the evidence belongs to this graph: a rebuilt variant does not inherit it
                "graph_sha256": runners[name].engine.package.variant.files[0].sha256,
            }
            if options.localize == "always" or (options.localize == "failing" and failures):
                torch_module = reference if isinstance(reference, TorchRunner) else None
                results[name]["localization"] = localize(
                    root, manifest, name, encoded.ids, options.batch_size, options.sqnr_floor, options.threads, torch_module
                )
            for failure in failures[:5]:
                progress.info(failure_line(failure))
            progress.info(f"{name}: {'PASS' if not failures else f'FAIL ({len(failures)} checks)'}")
    from polyglot_onnx.runtime.cpu import machine_block

    provider = next(iter(runners.values())).engine.provider
    return DriftReport(str(root), options.reference, info, results, machine=machine_block(provider),
                       provider=options.provider)


def record(directory: str | Path, report: DriftReport) -> mf.Manifest:
    """Write each variant's drift evidence into manifest.json (atomically), so the package carries it."""
    root = Path(directory)
    manifest = mf.read_manifest(root)
    variants = dict(manifest.variants)
    for name, result in report.variants.items():
        evidence = {
            "reference": report.reference,
            "corpus": report.corpus,
            "checked": report.checked,
            "machine": report.machine,
            "passed": result["passed"],
            "gate": result["gate"],
            "overall": result["overall"],
            "by_language": result["by_language"],
            "by_script": result["by_script"],
            "failures": result["failures"],
            "localization": result["localization"],
        }
        variant = variants.get(name)
        if variant is None or variant.files[0].sha256 != result["graph_sha256"]:
            continue  # rebuilt or removed while the drift ran: this evidence is not its evidence
        evidence["graph_sha256"] = result["graph_sha256"]
        variants[name] = replace(variant, validation=variant.validation | {mf.drift_key(report.provider): evidence})
    updated = replace(manifest, variants=variants)
    mf.write_manifest(root, updated)
    return updated
