"""``quantize_package``: add int8 / fp16 variants to an exported package, atomically.

Each variant is built from the validated fp32 graph into a temporary folder inside the package,
checked (fused operators intact, loads and runs in onnxruntime, finite outputs), renamed into
place, and only then listed in manifest.json. A failure or an interruption leaves the package's
existing variants and manifest as they were.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from polyglot_onnx import manifest as mf
from polyglot_onnx.errors import InputError, PackageError, QuantizeError, first_line
from polyglot_onnx.graph_feeds import graph_feeds
from polyglot_onnx.onnx_files import save_graph
from polyglot_onnx.progress import Progress
from polyglot_onnx.quantize.corpus import load_corpus
from polyglot_onnx.quantize.feeds import corpus_feeds, cpu_session
from polyglot_onnx.quantize.graphs import fused_counts, load_model
from polyglot_onnx.quantize.int8 import Int8Options
from polyglot_onnx.quantize.recipes import RECIPES, BuildInputs, Recipe, parse_variants
from polyglot_onnx.quantize.saturation import check_graph


@dataclass(frozen=True)
class QuantizeOptions:
    int8: Int8Options = field(default_factory=Int8Options)
    overwrite: bool = False
    corpus: str | None = None  # calibration / drift text; None -> built-in corpus
    drift: bool = True  # run the drift checker on the new variants and record it in the manifest
    max_drift: float | None = None  # int8 only: keep sensitive MatMuls in fp32 until this holds
    threads: int | None = None
    show_progress: bool = True
    canary: bool = True  # add the fp32 canary references for 'polyglot-onnx verify' if the package lacks them


def ensure_canary(root: Path, manifest: mf.Manifest, refresh: bool = False) -> mf.Manifest:
    """The fp32 graph's outputs on the canary texts, added when missing (older packages) or when asked."""
    if manifest.canary is not None and not refresh:
        return manifest
    if "fp32" not in manifest.variants:
        raise PackageError("the package has no fp32 variant to make canary references from: re-export it")
    from polyglot_onnx.runtime.canary import write_canary

    return write_canary(root)


def _calibration(root: Path, manifest: mf.Manifest, corpus: str | None) -> list[dict[str, Any]]:
    return corpus_feeds(root, manifest, corpus, per_language=4, batch=8, mask_row_token=True)


def smoke_run(path: Path, manifest: mf.Manifest) -> None:
    """Load the new graph and run one padded batch: it must load, run and stay finite."""
    try:
        session = cpu_session(path)
        ids = np.full((2, 12), manifest.tokenizer.pad_token_id, dtype=np.int64)
        low = max(manifest.tokenizer.special_ids.values()) + 1
        if low + 10 > manifest.model.vocab_size:  # <mask> is the last id (xlm-roberta)
            low = len(manifest.tokenizer.special_ids)
        ids[:, :10] = np.arange(10) + low
        mask = (ids != manifest.tokenizer.pad_token_id).astype(np.int64)
        outputs = session.run(None, graph_feeds(manifest.inputs, ids, mask, np.array([3, 15], dtype=np.int64)))
    except Exception as err:  # onnxruntime's own error types
        raise QuantizeError(f"the new variant does not run in onnxruntime: {first_line(err)}") from err
    for name, value in zip(manifest.outputs, outputs):
        if not np.isfinite(value).all():
            raise QuantizeError(f"the new variant produces NaN/Inf in {name}: it is not usable; report the model")


def remove_stale_temporaries(root: Path) -> list[str]:
    """What an interrupted build (SIGKILL, full disk) left behind: variant temp folders and temp
    manifests. Only names this stage itself creates are removed; returns them."""
    removed = []
    for path in root.iterdir():
        name = path.name
        if path.is_dir() and name.startswith(".") and ".tmp-" in name:
            shutil.rmtree(path, ignore_errors=True)
        elif path.is_file() and name.startswith(".") and name.endswith(".tmp"):
            path.unlink(missing_ok=True)
        else:
            continue
        removed.append(name)
    return removed


def _check_request(manifest: mf.Manifest, names: list[str], overwrite: bool) -> None:
    if "fp32" not in manifest.variants:
        raise PackageError("the package has no fp32 variant to quantize from: re-export it")
    for name in names:
        if name in manifest.variants and not overwrite:
            raise InputError(
                f"the package already has a {name} variant (quantized from fp32): pass --overwrite to rebuild it"
            )


def _build(root: Path, manifest: mf.Manifest, recipe: Recipe, inputs: BuildInputs) -> tuple[Any, dict[str, Any]]:
    fp32 = manifest.variants["fp32"]
    model = load_model(root / fp32.graph_file)
    before = fused_counts(model)
    built, report = recipe.build(model, inputs)
    after = fused_counts(built)
    if after != before:
        raise QuantizeError(f"{recipe.name} lost fused operators ({before} -> {after}): report this with the model")
    return built, report


def write_variant(root: Path, name: str, graph_file: str, model: Any, details: dict[str, Any],
                  facts: mf.VariantFacts | None = None) -> mf.Manifest:
    """Temp folder -> verify -> rename into place -> manifest; the old manifest survives any failure."""
    manifest = mf.read_manifest(root)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
    try:
        files = save_graph(model, tmp, graph_file)
        smoke_run(tmp / graph_file, manifest)
        entries = [mf.file_entry(tmp, f) for f in files]
        counts = fused_counts(model) | {"nodes": len(model.graph.node)}
        if name in manifest.variants:  # unlist first: an interruption leaves it absent, never wrong
            mf.write_manifest(root, replace(manifest, variants={k: v for k, v in manifest.variants.items() if k != name}))
        for f in files:
            os.replace(tmp / f, root / f)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    fp32_size = manifest.variants["fp32"].total_size
    variant = mf.Variant(
        name=name,
        files=entries,
        op_counts=counts,
        validation={},
        extra=details | {"size_ratio_to_fp32": round(sum(e.size for e in entries) / fp32_size, 4)},
        facts=facts,
    )
    updated = replace(manifest, variants=dict(manifest.variants) | {name: variant})
    mf.write_manifest(root, updated)
    return updated


def quantize_package(
    directory: str | os.PathLike[str], variants: str | list[str], options: QuantizeOptions | None = None
) -> mf.Manifest:
    """Build ``variants`` (e.g. 'int8,fp16') into the package at ``directory``."""
    options = options or QuantizeOptions()
    names = parse_variants(variants)
    if options.max_drift is not None:
        if not 0.0 < options.max_drift < 1.0:
            raise InputError(
                f"--max-drift must lie in (0, 1) (mean relative error of token embeddings), got {options.max_drift}"
            )
        if "int8" not in names:
            raise InputError("--max-drift applies to the int8 variant: add int8 to --variants")
    root = Path(directory).expanduser()
    manifest = mf.read_manifest(root)
    _check_request(manifest, names, options.overwrite)
    stale = remove_stale_temporaries(root)
    if options.corpus is not None:
        load_corpus(options.corpus)  # bad corpus files fail before any work
    canary = options.canary and manifest.canary is None
    steps = len(names) + (1 if options.drift else 0) + int(canary)
    progress = Progress(total=steps, enabled=options.show_progress, label="quantize")
    if stale:
        progress.info(f"removed what an interrupted run left behind: {', '.join(sorted(stale))}")
    if canary:
        with progress.step("canary references (fp32 outputs for 'polyglot-onnx verify')"):
            manifest = ensure_canary(root, manifest)
    inputs = BuildInputs(options.int8, lambda: _calibration(root, manifest, options.corpus))
    for name in names:
        recipe = RECIPES[name]
        with progress.step(f"building {name}: {recipe.summary}"):
            if name == "int8" and options.max_drift is not None:
                from polyglot_onnx.quantize.mixed import mixed_precision_int8

                model, details = mixed_precision_int8(root, manifest, options, progress)
            else:
                model, details = _build(root, manifest, recipe, inputs)
            details |= {
                "recipe_revision": recipe.revision,
                "avx2_saturation": check_graph(model).as_dict(),
            }
            manifest = write_variant(root, name, recipe.graph_file, model, details, recipe.facts)
            del model
            progress.info(
                f"{recipe.graph_file}: {manifest.variants[name].total_size / 1e6:.1f} MB "
                f"({manifest.variants[name].extra['size_ratio_to_fp32']:.0%} of fp32)"
            )
    if options.drift:
        from polyglot_onnx.quantize.drift import DriftOptions, record, run_drift

        with progress.step(f"drift check of {', '.join(names)} against fp32"):
            report = run_drift(
                root,
                DriftOptions(corpus=options.corpus, variants=tuple(names), threads=options.threads,
                             show_progress=options.show_progress, nested_progress=True),
            )
            manifest = record(root, report)
            for name in names:
                result = report.variants[name]
                progress.info(f"{name}: {'passed' if result['passed'] else 'FAILED'} its drift gate")
    return manifest
