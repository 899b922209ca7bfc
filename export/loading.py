"""Resolve what the user named (catalog name, hub id, local directory) and load it with transformers.

Hub ids go through transformers' real ``from_pretrained`` path; when the hub cannot be reached
the error names the model and suggests a local directory instead of a network stack trace.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polyglot_onnx.catalog import CATALOG, find_by_hub_id
from polyglot_onnx.errors import ExportError, ModelNotFoundError
from polyglot_onnx.export.architectures import ArchStrategy
from polyglot_onnx.export.families import strategy_for

SPECIAL_TOKEN_NAMES = ("pad", "unk", "cls", "sep", "bos", "eos", "mask")


@dataclass(frozen=True)
class Source:
    """Where a checkpoint comes from, and the name its package will carry."""

    name: str
    location: str  # local directory or hub id, as passed to from_pretrained
    is_local: bool


@dataclass
class Checkpoint:
    source: Source
    model: Any  # torch.nn.Module in eval mode
    config: Any
    strategy: ArchStrategy
    tokenizer_json: str
    special_ids: dict[str, int]
    mask_token: str | None
    has_mlm_head: bool
    default_pooling: str
    max_length: int
    sentence_pipeline: Any = None  # export.st_modules.SentencePipeline from modules.json, if any


def resolve_source(model: str) -> Source:
    """Catalog name -> hub id; existing directory -> local; ``org/name`` -> hub id."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"{path} has no config.json: pass a Hugging Face checkpoint directory "
                "(config.json, weights, tokenizer files)"
            )
        return Source(name=path.resolve().name, location=str(path.resolve()), is_local=True)
    if model in CATALOG:
        return Source(name=model, location=CATALOG[model].hub_id, is_local=False)
    looks_like_path = model.startswith((".", "/", "~")) or model.count("/") > 1 or path.suffix
    if looks_like_path or "/" not in model:
        known = ", ".join(sorted(CATALOG))
        raise ModelNotFoundError(
            f"{model!r} is neither a checkpoint directory, a catalog name ({known}) nor a hub id (org/name)"
        )
    spec = find_by_hub_id(model)
    return Source(name=spec.name if spec else model, location=model, is_local=False)


def _offline_error(source: Source, err: Exception) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"cannot load {source.location!r} from the Hugging Face hub ({type(err).__name__}): the hub is "
        "unreachable or the id is wrong; download the checkpoint elsewhere and pass its local directory"
    )


def _sentence_transformers_facts(directory: Path) -> tuple[str | None, int | None]:
    """Pooling mode and max_seq_length from a sentence-transformers layout, if present."""
    pooling: str | None = None
    max_len: int | None = None
    modules = directory / "modules.json"
    if modules.is_file():
        for module in json.loads(modules.read_text(encoding="utf-8")):
            if module.get("type", "").endswith("Pooling"):
                cfg_path = directory / module.get("path", "") / "config.json"
                if cfg_path.is_file():
                    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
                    if cfg.get("pooling_mode_cls_token"):
                        pooling = "cls"
                    elif cfg.get("pooling_mode_mean_tokens"):
                        pooling = "mean"
    st_cfg = directory / "sentence_bert_config.json"
    if st_cfg.is_file():
        max_len = json.loads(st_cfg.read_text(encoding="utf-8")).get("max_seq_length")
    return pooling, max_len


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Our progress lines replace transformers' bars and load reports (e.g. an unused pooler)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


def load_checkpoint(model: str, trust_remote_code: bool = False) -> Checkpoint:
    """Load model + fast tokenizer in fp32 with SDPA attention (the route that fuses to ONNX Attention)."""
    with quiet_transformers():
        return _load(model, trust_remote_code)


def _load(model: str, trust_remote_code: bool) -> Checkpoint:
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoTokenizer

    source = resolve_source(model)
    try:
        config = AutoConfig.from_pretrained(source.location, trust_remote_code=trust_remote_code)
    except OSError as err:
        if source.is_local:
            raise ModelNotFoundError(f"cannot read config.json in {source.location}: {err}") from err
        raise _offline_error(source, err) from err
    except ValueError as err:
        raise ModelNotFoundError(f"{source.location}: {err}".splitlines()[0]) from err
    strategy = strategy_for(config.model_type)

    architectures = getattr(config, "architectures", None) or []
    wants_head = any(a.endswith("ForMaskedLM") for a in architectures)
    kwargs: dict[str, Any] = {
        "attn_implementation": strategy.attn_implementation,
        "dtype": "float32",
        "trust_remote_code": trust_remote_code,
    }
    try:
        if wants_head:
            hf_model, info = AutoModelForMaskedLM.from_pretrained(
                source.location, output_loading_info=True, **kwargs
            )
            prefix = f"{strategy.encoder_attr}."
            missing_head = [k for k in info.get("missing_keys", []) if not k.startswith(prefix)]
            has_head = not missing_head
            if not has_head:  # the head would be random: ship an honest embedding-only package
                hf_model = strategy.encoder(hf_model)
        else:
            hf_model = AutoModel.from_pretrained(source.location, **kwargs)
            has_head = False
        tokenizer = AutoTokenizer.from_pretrained(source.location, trust_remote_code=trust_remote_code)
    except OSError as err:
        if source.is_local:
            raise ModelNotFoundError(f"cannot load the checkpoint in {source.location}: {err}") from err
        raise _offline_error(source, err) from err
    hf_model.eval()

    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(
            f"{source.location} has no fast tokenizer (tokenizer.json): save one with "
            "transformers' PreTrainedTokenizerFast, the runtime reads tokenizer.json only"
        )
    special_ids = {
        name: int(getattr(tokenizer, f"{name}_token_id"))
        for name in SPECIAL_TOKEN_NAMES
        if getattr(tokenizer, f"{name}_token_id", None) is not None
    }
    if "pad" not in special_ids:
        raise ExportError(f"the tokenizer of {source.location} defines no pad token: add one and re-save it")

    st_pooling, st_max = (
        _sentence_transformers_facts(Path(source.location)) if source.is_local else (None, None)
    )
    from polyglot_onnx.export.st_modules import read_pipeline

    pipeline = read_pipeline(Path(source.location)) if source.is_local else None
    if pipeline is not None and pipeline.trivial is None:  # sentence_embedding becomes the whole pipeline
        st_pooling = "sentence-transformers"
    spec = CATALOG.get(source.name)
    limits = [strategy.usable_positions(config)]
    if st_max:
        limits.append(int(st_max))
    if 0 < int(getattr(tokenizer, "model_max_length", 0) or 0) < 1_000_000:
        limits.append(int(tokenizer.model_max_length))

    backend = tokenizer.backend_tokenizer
    from tokenizers import Tokenizer

    clean = Tokenizer.from_str(backend.to_str())
    clean.no_padding()
    clean.no_truncation()
    return Checkpoint(
        source=source,
        model=hf_model,
        config=config,
        strategy=strategy,
        tokenizer_json=clean.to_str(),
        special_ids=special_ids,
        mask_token=tokenizer.mask_token if has_head else None,
        has_mlm_head=has_head,
        default_pooling=st_pooling or (spec.default_pooling if spec else "mean"),
        max_length=min(limits),
        sentence_pipeline=pipeline,
    )
