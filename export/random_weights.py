"""Architecture-exact, full-size checkpoints with random weights, built from the catalog.

Speed and graph structure do not depend on weight values, so these stand in for the real
models where the hub is unreachable. The tokenizer is trained on the project's text and padded
with filler tokens to the real vocabulary size, so the embedding table and LM head have their
real shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyglot_onnx.export.tiny import save_checkpoint
from polyglot_onnx.model_spec import ModelSpec


def pad_wordpiece(tokenizer: Any, size: int) -> Any:
    from tokenizers import models
    from transformers import PreTrainedTokenizerFast

    backend = tokenizer.backend_tokenizer
    vocab = backend.get_vocab()
    for i in range(size - len(vocab)):
        vocab[f"[unused{i}]"] = len(vocab)
    backend.model = models.WordPiece(vocab, unk_token="[UNK]")
    return PreTrainedTokenizerFast(tokenizer_object=backend, **tokenizer.special_tokens_map)


def pad_bpe(tokenizer: Any, size: int) -> Any:
    import json

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    data = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = data["model"]["vocab"]
    for i in range(size - len(vocab)):
        vocab[f"<unused{i}>"] = len(vocab)
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(data)), **tokenizer.special_tokens_map)


@dataclass(frozen=True)
class RandomWeights:
    """How to rebuild one architecture with random weights: transformers classes and the tokenizer family
    (one per family, in export/families/<family>.py)."""

    config_class: str
    model_class: str
    train_tokenizer: Any
    pad_tokenizer: Any
    special_ids: dict[str, int]
    renames: dict[str, str] = field(default_factory=dict)  # catalog config field -> this config's name


def build_random_checkpoint(spec: ModelSpec, out: Path, corpus: Path, seed: int = 0) -> Path:
    """Save ``spec``'s architecture with seeded random weights and a real-size tokenizer to ``out``."""
    import torch
    import transformers

    from polyglot_onnx.export.families import RANDOM_WEIGHTS

    build = RANDOM_WEIGHTS[spec.architecture]
    tokenizer = build.pad_tokenizer(build.train_tokenizer(corpus), spec.vocab_size)
    overrides = {build.renames.get(k, k): v for k, v in spec.config_overrides().items()}
    fields = {**overrides, "pad_token_id": tokenizer.pad_token_id, **build.special_ids}
    config = getattr(transformers, build.config_class)(**fields)
    torch.manual_seed(seed)
    model = getattr(transformers, build.model_class)(config).eval()
    tokenizer.model_max_length = spec.max_length
    return save_checkpoint(model, tokenizer, out)
