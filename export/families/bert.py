"""BERT: mBERT (cased and uncased) and the BERT-shaped sentence encoders (LaBSE, multilingual-e5-small,
paraphrase-multilingual-MiniLM): export strategy, random-weight build, catalog rows and tiny fixtures."""

from __future__ import annotations

import json
from pathlib import Path

from polyglot_onnx.export.architectures import ArchStrategy
from polyglot_onnx.export.random_weights import RandomWeights, pad_wordpiece
from polyglot_onnx.export.tiny import save_checkpoint, train_wordpiece, write_sentence_transformers_files
from polyglot_onnx.model_spec import BASE, E5_PROMPTS, MEAN_NORM, MINI, ModelSpec

STRATEGY = ArchStrategy(
    model_type="bert",
    encoder_attr="bert",
    transform_attr="cls.predictions.transform",
    fused_ops_per_layer={"Attention": 1},
    needs_token_type_ids=True,
)

RANDOM_WEIGHTS = RandomWeights("BertConfig", "BertForMaskedLM", train_wordpiece, pad_wordpiece, {})

SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="mbert-cased",
        hub_id="google-bert/bert-base-multilingual-cased",
        architecture="bert",
        num_layers=12,
        hidden_size=768,
        num_heads=12,
        intermediate_size=3072,
        vocab_size=119547,
        max_length=512,
        mask_token="[MASK]",
    ),
    ModelSpec(
        name="bert-base-multilingual-uncased", hub_id="google-bert/bert-base-multilingual-uncased",
        architecture="bert", vocab_size=105879, max_length=512, mask_token="[MASK]", **BASE,
    ),
    ModelSpec(
        name="labse", hub_id="sentence-transformers/LaBSE", architecture="bert", vocab_size=501153,
        max_length=256, max_positions=512,  # sentence-transformers max_seq_length caps the 512-row table
        mask_token="[MASK]", has_mlm_head=False, default_pooling="cls",
        pipeline=("Pooling(cls)", "Dense(768->768, tanh)", "Normalize"), **BASE,
    ),
    ModelSpec(
        name="multilingual-e5-small", hub_id="intfloat/multilingual-e5-small", architecture="bert",
        vocab_size=250037, max_length=512, mask_token="<mask>", has_mlm_head=False, pipeline=MEAN_NORM,
        prompts=E5_PROMPTS, **MINI,
    ),
    ModelSpec(
        name="paraphrase-multilingual-minilm-l12-v2",
        hub_id="sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2", architecture="bert",
        vocab_size=250037, max_length=128, max_positions=512, mask_token="<mask>", has_mlm_head=False, pipeline=("Pooling(mean)",),
        **MINI,
    ),
)


def build_tiny_bert(
    out: Path, corpus: Path, seed: int = 0, with_head: bool = True, initializer_range: float = 0.02
) -> Path:
    """A 2-layer cased BERT; ``with_head=False`` saves the bare encoder with sentence-transformers files.

    ``initializer_range=0.2`` gives the large weights that expose int8 kernel saturation.
    """
    import torch
    from transformers import BertConfig, BertForMaskedLM

    tokenizer = train_wordpiece(corpus)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=initializer_range,
    )
    model = BertForMaskedLM(config).eval()
    if with_head:
        return save_checkpoint(model, tokenizer, out)
    save_checkpoint(model.bert, tokenizer, out)
    (out / "modules.json").write_text(
        json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ])
    )
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 64, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    )
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": False}))
    return out


def build_tiny_labse(out: Path, corpus: Path, seed: int = 0) -> Path:
    """LaBSE-shaped: a bare BERT encoder, CLS pooling, Dense(tanh), Normalize; e5-style query/passage prompts."""
    import torch
    from transformers import BertConfig, BertModel

    tokenizer = train_wordpiece(corpus)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
    )
    model = BertModel(config, add_pooling_layer=False).eval()
    save_checkpoint(model, tokenizer, out)
    dense = [(torch.randn(64, 64) * 0.2, torch.randn(64) * 0.1, "Tanh")]
    return write_sentence_transformers_files(
        out, 64, "cls", dense, normalize=True, prompts={"query": "query: ", "passage": "passage: "},
        default_prompt_name="query",
    )


TINY = {"tiny-bert": build_tiny_bert}
