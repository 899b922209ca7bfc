"""XLM-RoBERTa and what is built on it (multilingual-e5 base / large, bge-m3, paraphrase-multilingual-mpnet):
export strategy, random-weight build, catalog rows and tiny fixtures."""

from __future__ import annotations

from pathlib import Path

from polyglot_onnx.export.architectures import ArchStrategy
from polyglot_onnx.export.random_weights import RandomWeights
from polyglot_onnx.export.tiny import pad_unigram, save_checkpoint, train_unigram, write_sentence_transformers_files
from polyglot_onnx.model_spec import BASE, E5_PROMPTS, LARGE, MEAN_NORM, XLMR, ModelSpec

STRATEGY = ArchStrategy(
    model_type="xlm-roberta",
    encoder_attr="roberta",
    transform_attr="lm_head",
    fused_ops_per_layer={"Attention": 1},
    needs_token_type_ids=True,  # a single token type (type_vocab_size 1): zeros
    transform_steps=("lm_head.dense", "gelu", "lm_head.layer_norm"),
    positions_after_pad=True,
)

RANDOM_WEIGHTS = RandomWeights(
    "XLMRobertaConfig",
    "XLMRobertaForMaskedLM",
    train_unigram,
    pad_unigram,
    {"bos_token_id": 0, "eos_token_id": 2},
)

SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(name="xlm-roberta-base", hub_id="FacebookAI/xlm-roberta-base", max_length=512, **BASE, **XLMR)
,
    ModelSpec(name="xlm-roberta-large", hub_id="FacebookAI/xlm-roberta-large", max_length=512, **LARGE, **XLMR)
,
    ModelSpec(
        name="multilingual-e5-base", hub_id="intfloat/multilingual-e5-base", max_length=512, has_mlm_head=False,
        pipeline=MEAN_NORM, prompts=E5_PROMPTS, **BASE, **XLMR,
    ),
    ModelSpec(
        name="multilingual-e5-large", hub_id="intfloat/multilingual-e5-large", max_length=512, has_mlm_head=False,
        pipeline=MEAN_NORM, prompts=E5_PROMPTS, **LARGE, **XLMR,
    ),
    ModelSpec(
        name="bge-m3", hub_id="BAAI/bge-m3", max_length=8192, has_mlm_head=False, default_pooling="cls",
        pipeline=("Pooling(cls)", "Normalize"), **LARGE, **XLMR,
    ),
    ModelSpec(
        name="paraphrase-multilingual-mpnet-base-v2",
        hub_id="sentence-transformers/paraphrase-multilingual-mpnet-base-v2",
        max_length=128, max_positions=514,  # sentence-transformers max_seq_length caps the 514-row table
        has_mlm_head=False, pipeline=("Pooling(mean)",), **BASE, **XLMR,
    ),
)


def build_tiny_xlm_roberta(out: Path, corpus: Path, seed: int = 0, max_length: int = 256) -> Path:
    """A 2-layer XLMRobertaForMaskedLM: positions 0..pad are reserved, texts use pad+1 onwards."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

    tokenizer = train_unigram(corpus)
    tokenizer.model_max_length = max_length
    torch.manual_seed(seed)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=max_length + tokenizer.pad_token_id + 1,
        type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = XLMRobertaForMaskedLM(config).eval()
    return save_checkpoint(model, tokenizer, out)


def build_tiny_e5_like(
    out: Path, corpus: Path, pooling: str | list[str] = "mean", dense_out: int | None = None, seed: int = 0
) -> Path:
    """A bare XLM-RoBERTa encoder with sentence-transformers files (multilingual-e5 / mpnet-shaped);
    ``dense_out`` adds an Identity Dense layer that changes the embedding width."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    tokenizer = train_unigram(corpus)
    tokenizer.model_max_length = 256
    torch.manual_seed(seed)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=258, type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=0, eos_token_id=2,
    )
    save_checkpoint(XLMRobertaModel(config, add_pooling_layer=False).eval(), tokenizer, out)
    modes = 1 if isinstance(pooling, str) else len(pooling)
    dense = [(torch.randn(dense_out, 64 * modes) * 0.1, None, "Identity")] if dense_out else None
    return write_sentence_transformers_files(
        out, 64, pooling, dense, normalize=False, prompts={"query": "query: ", "passage": "passage: "}
    )


TINY = {}
