"""DeBERTa-v2 (mdeberta-v3-base): disentangled attention has no fused ONNX operator, so it exports unfused
(declared); export strategy, random-weight build, catalog row and the tiny fixture."""

from __future__ import annotations

from pathlib import Path

from polyglot_onnx.export.architectures import ArchStrategy
from polyglot_onnx.export.random_weights import RandomWeights
from polyglot_onnx.export.tiny import pad_unigram, save_checkpoint, train_unigram_bert_layout
from polyglot_onnx.model_spec import BASE, ModelSpec

# mdeberta-v3-base's config.json fields beyond the sizes (disentangled relative attention, legacy MLM head)
MDEBERTA_CONFIG = {
    "relative_attention": True, "max_relative_positions": -1, "pos_att_type": ["p2c", "c2p"],
    "position_biased_input": False, "type_vocab_size": 0, "norm_rel_ebd": "layer_norm", "share_att_key": True,
    "legacy": True,
}


STRATEGY = ArchStrategy(
    model_type="deberta-v2",
    encoder_attr="deberta",
    transform_attr="cls.predictions.transform",  # mdeberta-v3's legacy head, BERT-shaped
    fused_ops_per_layer={"Attention": 0},  # disentangled attention has no fused ONNX operator
    needs_token_type_ids=True,
    attn_implementation="eager",
)

RANDOM_WEIGHTS = RandomWeights(
    "DebertaV2Config",
    "DebertaV2ForMaskedLM",
    train_unigram_bert_layout,
    pad_unigram,
    {**MDEBERTA_CONFIG, "position_buckets": 256},
)

SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(  # disentangled attention: no fused ONNX operator, exported "unfused" (fused count 0)
        name="mdeberta-v3-base", hub_id="microsoft/mdeberta-v3-base", architecture="deberta-v2", vocab_size=251000,
        max_length=512, mask_token="[MASK]", **BASE,
    ),
)


def build_tiny_mdeberta(out: Path, corpus: Path, seed: int = 0) -> Path:
    """A 2-layer DebertaV2ForMaskedLM (legacy BERT-shaped head, relative positions, no absolute ones)."""
    import torch
    from transformers import DebertaV2Config, DebertaV2ForMaskedLM

    tokenizer = train_unigram_bert_layout(corpus)
    tokenizer.model_max_length = 256
    torch.manual_seed(seed)
    config = DebertaV2Config(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=256, position_buckets=32, pad_token_id=0, **MDEBERTA_CONFIG,
    )
    model = DebertaV2ForMaskedLM(config).eval()
    return save_checkpoint(model, tokenizer, out)


TINY = {}
