"""DistilBERT (distilbert-base-multilingual-cased): export strategy, random-weight build, catalog row and the
tiny fixture."""

from __future__ import annotations

from pathlib import Path

from polyglot_onnx.export.architectures import ArchStrategy
from polyglot_onnx.export.random_weights import RandomWeights, pad_wordpiece
from polyglot_onnx.export.tiny import save_checkpoint, train_wordpiece
from polyglot_onnx.model_spec import ModelSpec

STRATEGY = ArchStrategy(
    model_type="distilbert",
    encoder_attr="distilbert",
    transform_attr="vocab_transform",
    fused_ops_per_layer={"Attention": 1},
    transform_steps=("vocab_transform", "activation", "vocab_layer_norm"),
)

RANDOM_WEIGHTS = RandomWeights(
    "DistilBertConfig",
    "DistilBertForMaskedLM",
    train_wordpiece,
    pad_wordpiece,
    {},
    {"intermediate_size": "hidden_dim"},
)

SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="distilbert-base-multilingual-cased", hub_id="distilbert/distilbert-base-multilingual-cased",
        architecture="distilbert", num_layers=6, hidden_size=768, num_heads=12, intermediate_size=3072,
        vocab_size=119547, max_length=512, mask_token="[MASK]",
    ),
)


def build_tiny_distilbert(out: Path, corpus: Path, seed: int = 0) -> Path:
    """A 2-layer cased DistilBertForMaskedLM (no token types, its own layer names)."""
    import torch
    from transformers import DistilBertConfig, DistilBertForMaskedLM

    tokenizer = train_wordpiece(corpus)
    torch.manual_seed(seed)
    config = DistilBertConfig(
        vocab_size=len(tokenizer),
        dim=64,
        n_layers=2,
        n_heads=4,
        hidden_dim=128,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = DistilBertForMaskedLM(config).eval()
    return save_checkpoint(model, tokenizer, out)


TINY = {}
