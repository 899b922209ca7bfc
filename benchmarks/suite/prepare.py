"""What the contenders run: one checkpoint, the polyglot package built from it, the Optimum builds.

Everything is built from the same checkpoint directory and cached under the run's work folder,
so a second run (or another contender list) reuses it. Directories appear by rename only.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from polyglot_onnx.errors import BenchError
from polyglot_onnx.progress import Progress


def _tiny_builders() -> dict[str, Callable[[Path], Path]]:
    from polyglot_onnx.export.families.bert import build_tiny_bert
    from polyglot_onnx.export.families.modernbert import build_tiny_modernbert
    from polyglot_onnx.export.tiny import default_corpus

    return {
        "tiny-bert": lambda out: build_tiny_bert(out, default_corpus()),
        "tiny-modernbert": lambda out: build_tiny_modernbert(out, default_corpus()),
    }


TINY_NAMES = ("tiny-bert", "tiny-modernbert")


def _build_atomic(out: Path, build: Callable[[Path], Any]) -> Path:
    if (out / "config.json").is_file():
        return out
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        build(tmp)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def resolve_checkpoint(model: str, random_weights: bool, work: Path) -> tuple[str, Path]:
    """(display name, local checkpoint directory) for a catalog name, a tiny fixture or a local dir."""
    from polyglot_onnx.catalog import CATALOG, get_spec

    if model in TINY_NAMES:
        return model, _build_atomic(work / "checkpoints" / model, _tiny_builders()[model])
    if random_weights:
        spec = get_spec(model)

        def build(out: Path) -> None:
            from polyglot_onnx.export.random_weights import build_random_checkpoint
            from polyglot_onnx.export.tiny import default_corpus

            build_random_checkpoint(spec, out, default_corpus())

        return spec.name, _build_atomic(work / "checkpoints" / f"{spec.name}-random", build)
    path = Path(model).expanduser()
    if (path / "config.json").is_file():
        return path.resolve().name, path.resolve()
    hint = " with --random-weights (no download)" if model in CATALOG else ""
    raise BenchError(
        f"{model!r} is not a local checkpoint directory: benchmarks run offline on a local checkpoint, a catalog "
        f"name{hint or ' with --random-weights'}, or a tiny fixture ({', '.join(TINY_NAMES)})"
    )


def ensure_package(checkpoint: Path, directory: Path, variants: list[str], threads: int, show_progress: bool,
                   banded: bool = True) -> Path:
    """Export the fp32 package once, then add (or refresh) the quantized variants it needs (drift check off).

    ``banded=False`` exports ModernBERT's local layers as dense band-masked attention (the "dense" contender).
    """
    from polyglot_onnx import manifest as mf
    from polyglot_onnx.export import ExportOptions, export_package
    from polyglot_onnx.quantize import QuantizeOptions, quantize_package
    from polyglot_onnx.quantize.recipes import RECIPES

    if not (directory / mf.MANIFEST_NAME).is_file():
        export_package(str(checkpoint), directory, ExportOptions(show_progress=show_progress, overwrite=True,
                                                                          banded_attention=banded))
    have = mf.read_manifest(directory).variants
    # A variant built by an older revision of its recipe is rebuilt: a stale graph would be timed otherwise.
    missing = [v for v in variants if v != "fp32" and (
        v not in have or have[v].extra.get("recipe_revision", 1) != RECIPES[v].revision)]
    if missing:
        # Speed does not depend on the drift evidence; 'polyglot-onnx drift DIR' measures it separately.
        quantize_package(directory, ",".join(missing),
                         QuantizeOptions(drift=False, threads=threads, show_progress=show_progress, overwrite=True))
    return directory


def ensure_optimum(checkpoint: Path, work: Path, tasks: list[str], variants: list[str], env: Path | None,
                   progress: Progress) -> dict[str, dict[str, str]]:
    """Optimum's graphs per task (fill-mask / feature-extraction), built in the isolated environment."""
    from polyglot_onnx.bench.optimum_route import build_optimum, ensure_env

    python = ensure_env(env, log=progress.info)
    levels = [v for v in variants if v != "fp32"]
    out: dict[str, dict[str, str]] = {v: {} for v in variants}
    for task in tasks:
        optimum_task = OPTIMUM_TASKS[task]
        build = build_optimum(checkpoint, work / "optimum" / checkpoint.name / optimum_task, optimum_task, python,
                              levels=levels, log=progress.info)
        for variant in variants:
            path = build.files.get(variant)
            if path is None:  # refused by Optimum: its rows say so, the other contenders still run
                progress.info(f"the Optimum route has no {variant} graph for {task} "
                              f"(see {build.directory / 'summary.json'}); its rows are marked")
            else:
                out[variant][task] = str(path)
    return out


def ensure_ortopt(checkpoint: Path, work: Path, tasks: list[str], variants: list[str], provider: str,
                  progress: Progress) -> dict[str, dict[str, str]]:
    """onnxruntime's transformer-optimizer graphs per variant and task (benchmarks/suite/ortopt_build.py)."""
    from polyglot_onnx.bench.ortopt_build import build_ortopt

    out: dict[str, dict[str, str]] = {v: {} for v in variants}
    for variant in variants:
        for task in tasks:
            try:
                path = build_ortopt(checkpoint, work / "ortopt" / checkpoint.name / f"{task}-{variant}", task, variant,
                                    use_gpu=provider == "cuda")
            except BenchError as err:  # its rows are marked; the other contenders still run
                progress.info(str(err))
                continue
            out[variant][task] = str(path)
    return out


OPTIMUM_TASKS: dict[str, str] = {"fill-mask": "fill-mask", "embed": "feature-extraction"}


def mask_token(checkpoint: Path) -> str | None:
    """The checkpoint's mask token, from its tokenizer config (fill-mask text needs it)."""
    import json

    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = checkpoint / name
        if path.is_file():
            value = json.loads(path.read_text(encoding="utf-8")).get("mask_token")
            if isinstance(value, dict):
                value = value.get("content")
            if value:
                return str(value)
    return None
