"""``export_package``: checkpoint -> validated fp32 package directory, written atomically."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyglot_onnx import manifest as mf
from polyglot_onnx import onnx_files
from polyglot_onnx.errors import ExportError, PolyglotError, first_line
from polyglot_onnx.export.dispatch import LengthDispatch
from polyglot_onnx.export.graph import build_module, export_onnx, package_io
from polyglot_onnx.export.loading import Checkpoint, Source, load_checkpoint
from polyglot_onnx.export.passes import ClampIrVersion, DeduplicateInitializers, FusionCheck
from polyglot_onnx.export.topk import MaskTopK
from polyglot_onnx.export.validate import Tolerance, validate
from polyglot_onnx.export.versions import check_versions
from polyglot_onnx.graph_toolkit import GraphPass, op_histogram
from polyglot_onnx.progress import Progress

GRAPH_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
EXTERNAL_DATA_THRESHOLD = onnx_files.EXTERNAL_DATA_THRESHOLD


@dataclass(frozen=True)
class ExportOptions:
    tolerance: Tolerance = field(default_factory=Tolerance)
    trust_remote_code: bool = False
    overwrite: bool = False
    random_weights: bool = False  # catalog name -> architecture-exact checkpoint, random weights
    show_progress: bool = True
    # ModernBERT local layers as block-banded attention; False gives the dense band-masked graph
    banded_attention: bool = True
    canary: bool = True  # store the fp32 graph's outputs on the canary texts for 'polyglot-onnx verify'


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("polyglot-onnx", "torch", "transformers", "onnx", "onnxscript", "onnxruntime", "tokenizers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def save_graph(model: Any, directory: Path) -> list[str]:
    return onnx_files.save_graph(model, directory, GRAPH_FILE, EXTERNAL_DATA_THRESHOLD)


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory: choose another --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out} is not empty: choose another --out or pass --overwrite")


def _publish(tmp: Path, out: Path) -> None:
    """Swap the finished temporary directory into place with renames only."""
    backup = None
    if out.exists():
        backup = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, backup)
    os.replace(tmp, out)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def _model_info(ckpt: Checkpoint, banded: bool) -> mf.ModelInfo:
    cfg = ckpt.config
    return mf.ModelInfo(
        name=ckpt.source.name,
        source=ckpt.source.location,
        architecture=cfg.model_type,
        num_layers=int(cfg.num_hidden_layers),
        hidden_size=int(cfg.hidden_size),
        num_heads=int(cfg.num_attention_heads),
        vocab_size=int(cfg.vocab_size),
        max_length=ckpt.max_length,
        default_pooling=ckpt.default_pooling,
        has_mlm_head=ckpt.has_mlm_head,
        local_window=ckpt.strategy.local_window(cfg),
        local_attention=None if ckpt.strategy.layer_kinds(cfg) is None else ("banded" if banded else "dense"),
        dense_up_to=(ckpt.strategy.dense_up_to(cfg) or None) if banded else None,
        attention="fused" if ckpt.strategy.fused else "unfused",
        **_sentence_fields(ckpt),
    )


def _sentence_fields(ckpt: Checkpoint) -> dict[str, Any]:
    """The sentence-transformers pipeline and prompts, for packages made from such a checkpoint."""
    pipeline = ckpt.sentence_pipeline
    if pipeline is None:
        return {}
    width = pipeline.output_dim(int(ckpt.config.hidden_size)) if pipeline.trivial is None else None
    return {
        "sentence_pipeline": pipeline.describe(),
        "embedding_dim": width if width != int(ckpt.config.hidden_size) else None,
        "prompts": dict(pipeline.prompts),
        "default_prompt_name": pipeline.default_prompt_name,
        "similarity_fn_name": pipeline.similarity_fn_name,
    }


def _tokenizer_info(ckpt: Checkpoint, vocab_size: int) -> mf.TokenizerInfo:
    return mf.TokenizerInfo(
        file=TOKENIZER_FILE,
        vocab_size=vocab_size,
        max_length=ckpt.max_length,
        mask_token=ckpt.mask_token,
        mask_token_id=ckpt.special_ids.get("mask") if ckpt.has_mlm_head else None,
        pad_token_id=ckpt.special_ids["pad"],
        special_ids=ckpt.special_ids,
    )


def export_package(model: str, out: str | os.PathLike[str], options: ExportOptions | None = None) -> mf.Manifest:
    """Export ``model`` (catalog name, hub id or checkpoint dir) to a package directory at ``out``."""
    options = options or ExportOptions()
    check_versions()
    out_path = Path(out).expanduser().resolve()
    _prepare_out(out_path, options.overwrite)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    progress = Progress(total=5, enabled=options.show_progress, label="export")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.tmp-", dir=out_path.parent))
    try:
        manifest = _export_into(model, tmp, options, progress)
        _publish(tmp, out_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress.info(f"package written to {out_path}")
    return manifest


def _load(model: str, options: ExportOptions, workdir: Path) -> Checkpoint:
    if not options.random_weights:
        return load_checkpoint(model, trust_remote_code=options.trust_remote_code)
    from polyglot_onnx.catalog import get_spec
    from polyglot_onnx.export.random_weights import build_random_checkpoint
    from polyglot_onnx.export.tiny import default_corpus

    spec = get_spec(model)
    path = build_random_checkpoint(spec, workdir / spec.name, default_corpus())
    ckpt = load_checkpoint(str(path))
    ckpt.source = Source(name=spec.name, location=f"random-weights:{spec.hub_id}", is_local=True)
    return ckpt


def _export_into(model: str, tmp: Path, options: ExportOptions, progress: Progress) -> mf.Manifest:
    with progress.step(f"loading {model}" + (" (building random weights)" if options.random_weights else "")):
        with tempfile.TemporaryDirectory(prefix="polyglot-ckpt-") as workdir:
            ckpt = _load(model, options, Path(workdir))
        progress.info(
            f"{ckpt.config.model_type}, {ckpt.config.num_hidden_layers} layers, "
            f"{'masked-LM head' if ckpt.has_mlm_head else 'embedding-only (no masked-LM head)'}"
        )
    banded = options.banded_attention and ckpt.strategy.banded_local
    kind = "fused, banded local" if banded else ("fused" if ckpt.strategy.fused else "unfused (no fused operator)")
    with progress.step(f"exporting to ONNX (torch.onnx dynamo, opset 23, {kind} attention)"):
        module = build_module(ckpt)
        try:
            proto = export_onnx(ckpt, module, banded=banded)
        except PolyglotError:
            raise
        except Exception as err:  # torch.export raises many types; name the stage and cause
            raise ExportError(f"torch.onnx.export failed for {model}: {first_line(err, None)}") from err
    with progress.step("graph passes (fusion check, tied weights, IR version)"):
        expected = ckpt.strategy.fusion_expectation(ckpt.config, banded)
        kinds = ckpt.strategy.layer_kinds(ckpt.config)
        dispatch = ckpt.strategy.dense_up_to(ckpt.config) if banded else 0
        passes: tuple[GraphPass, ...] = (FusionCheck(expected, kinds), MaskTopK(), DeduplicateInitializers(),
                                   ClampIrVersion())
        if dispatch and kinds is not None:
            half_window = int(ckpt.strategy.local_window(ckpt.config)) // 2  # transformers' |i - j| bound
            passes = (LengthDispatch(dispatch, half_window, kinds), *passes)
        reports = [p.apply(proto) for p in passes]
        for report in reports:
            progress.info(f"{report.name}: {report.counts}")
        fused = next(r for r in reports if r.name == "fusion-check").counts
        files = save_graph(proto, tmp)
        counts = dict(op_histogram(proto))
        del proto
    with progress.step("validating against PyTorch (short, > local window, padded batch)"):
        validation = validate(ckpt, module, str(tmp / GRAPH_FILE), options.tolerance)
        progress.info(f"max abs diff: {validation['max_abs_diff']}")
    with progress.step("writing tokenizer and manifest"):
        from tokenizers import Tokenizer

        (tmp / TOKENIZER_FILE).write_text(ckpt.tokenizer_json, encoding="utf-8")
        vocab = Tokenizer.from_str(ckpt.tokenizer_json).get_vocab_size(with_added_tokens=True)
        inputs, outputs = package_io(ckpt.has_mlm_head)
        variant = mf.Variant(
            name="fp32",
            files=[mf.file_entry(tmp, f) for f in files],
            op_counts=dict(fused) | {"nodes": sum(counts.values())},
            validation=validation,
            facts=mf.fp32_facts(),
        )
        manifest = mf.Manifest(
            model=_model_info(ckpt, banded),
            tokenizer=_tokenizer_info(ckpt, vocab),
            inputs=inputs,
            outputs=outputs,
            variants={"fp32": variant},
            versions=library_versions(),
            created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            tokenizer_sha256=mf.sha256_file(tmp / TOKENIZER_FILE),
            tokenizer_size=(tmp / TOKENIZER_FILE).stat().st_size,
        )
        mf.write_manifest(tmp, manifest)
        if options.canary:
            from polyglot_onnx.runtime.canary import write_canary

            manifest = write_canary(tmp, verify=False)  # files were hashed a moment ago
            progress.info(f"canary references for 'polyglot-onnx verify': {manifest.canary.size / 1e3:.0f} kB")
    return manifest
