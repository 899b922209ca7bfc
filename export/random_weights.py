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

from polyglot_onnx.catalog import ModelSpec
from polyglot_onnx.export.tiny import save_checkpoint, train_gemma_like, train_wordpiece
from polyglot_onnx.export.tiny_families import MDEBERTA_CONFIG, pad_unigram, train_unigram, train_unigram_bert_layout


def _pad_wordpiece(tokenizer: Any, size: int) -> Any:
    from tokenizers import models
    from transformers import PreTrainedTokenizerFast

    backend = tokenizer.backend_tokenizer
    vocab = backend.get_vocab()
    for i in range(size - len(vocab)):
        vocab[f"[unused{i}]"] = len(vocab)
    backend.model = models.WordPiece(vocab, unk_token="[UNK]")
    return PreTrainedTokenizerFast(tokenizer_object=backend, **tokenizer.special_tokens_map)


def _pad_bpe(tokenizer: Any, size: int) -> Any:
    import json

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    data = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = data["model"]["vocab"]
    for i in range(size - len(vocab)):
        vocab[f"<unused{i}>"] = len(vocab)
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(data)), **tokenizer.special_tokens_map)


@dataclass(frozen=True)
class RandomRecipe:
    """How to rebuild one architecture: transformers classes and the tokenizer family."""

    config_class: str
    model_class: str
    train_tokenizer: Any
    pad_tokenizer: Any
    special_ids: dict[str, int]
    renames: dict[str, str] = field(default_factory=dict)  # catalog config field -> this config's name


RECIPES: dict[str, RandomRecipe] = {
    "bert": RandomRecipe("BertConfig", "BertForMaskedLM", train_wordpiece, _pad_wordpiece, {}),
    "modernbert": RandomRecipe(
        "ModernBertConfig",
        "ModernBertForMaskedLM",
        train_gemma_like,
        _pad_bpe,
        {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2, "cls_token_id": 2, "sep_token_id": 1},
    ),
    "xlm-roberta": RandomRecipe(
        "XLMRobertaConfig",
        "XLMRobertaForMaskedLM",
        train_unigram,
        pad_unigram,
        {"bos_token_id": 0, "eos_token_id": 2},
    ),
    "distilbert": RandomRecipe(
        "DistilBertConfig",
        "DistilBertForMaskedLM",
        train_wordpiece,
        _pad_wordpiece,
        {},
        {"intermediate_size": "hidden_dim"},
    ),
    "deberta-v2": RandomRecipe(
        "DebertaV2Config",
        "DebertaV2ForMaskedLM",
        train_unigram_bert_layout,
        pad_unigram,
        {**MDEBERTA_CONFIG, "position_buckets": 256},
    ),
}


def build_random_checkpoint(spec: ModelSpec, out: Path, corpus: Path, seed: int = 0) -> Path:
    """Save ``spec``'s architecture with seeded random weights and a real-size tokenizer to ``out``."""
    import torch
    import transformers

    recipe = RECIPES[spec.architecture]
    tokenizer = recipe.pad_tokenizer(recipe.train_tokenizer(corpus), spec.vocab_size)
    overrides = {recipe.renames.get(k, k): v for k, v in spec.config_overrides().items()}
    fields = {**overrides, "pad_token_id": tokenizer.pad_token_id, **recipe.special_ids}
    config = getattr(transformers, recipe.config_class)(**fields)
    torch.manual_seed(seed)
    model = getattr(transformers, recipe.model_class)(config).eval()
    tokenizer.model_max_length = spec.max_length
    return save_checkpoint(model, tokenizer, out)
