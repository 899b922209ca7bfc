"""Tiny XLM-RoBERTa and DistilBERT checkpoints: the neighbours of mBERT, a few layers wide.

XLM-RoBERTa's tokenizer is a SentencePiece Unigram (trained here with ``tokenizers``) with the
fairseq special layout (<s> 0, <pad> 1, </s> 2, <unk> 3, <mask> last), so positions start after
the padding index exactly as in the published checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from polyglot_onnx.export.tiny import _lines, save_checkpoint, train_wordpiece

XLMR_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3, as in fairseq / xlm-roberta


def train_unigram(corpus: Path, vocab_size: int = 1200) -> Any:
    """SentencePiece-style Unigram (Metaspace, NFKC) with <mask> appended last, like xlm-roberta-base."""
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=XLMR_SPECIALS, unk_token="<unk>", shrinking_factor=0.75
    )
    tok.train_from_iterator(_lines(corpus), trainer)
    tok.add_special_tokens([AddedToken("<mask>", special=True, lstrip=True)])
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        cls_token="<s>",
        sep_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
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


def pad_unigram(tokenizer: Any, size: int) -> Any:
    """Filler pieces up to ``size`` ids, <mask> moved to the last id as in xlm-roberta (250001)."""
    import json

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    data = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = data["model"]["vocab"]
    vocab.extend([f"<unused{i}>", -100.0] for i in range(size - 1 - len(vocab)))
    for added in data["added_tokens"]:
        if added["content"] == tokenizer.mask_token:
            added["id"] = size - 1
    fast = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(data)), **tokenizer.special_tokens_map)
    return fast


def write_sentence_transformers_files(
    out: Path,
    hidden: int,
    pooling: str | list[str],
    dense: list[tuple[Any, Any, str]] | None = None,
    normalize: bool = False,
    prompts: dict[str, str] | None = None,
    default_prompt_name: str | None = None,
    max_seq_length: int = 128,
) -> Path:
    """modules.json and each module's folder in sentence-transformers' own layout (Dense as safetensors)."""
    import json

    from safetensors.torch import save_file

    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]

    def add(kind: str, config: dict[str, Any] | None) -> Path:
        idx = len(modules)
        folder = f"{idx}_{kind}"
        modules.append({"idx": idx, "name": str(idx), "path": folder, "type": f"sentence_transformers.models.{kind}"})
        (out / folder).mkdir(parents=True, exist_ok=True)
        if config is not None:
            (out / folder / "config.json").write_text(json.dumps(config))
        return out / folder

    add("Pooling", {"embedding_dimension": hidden, "pooling_mode": pooling, "include_prompt": True})
    for weight, bias, activation in dense or []:
        folder = add("Dense", {
            "in_features": int(weight.shape[1]), "out_features": int(weight.shape[0]), "bias": bias is not None,
            "activation_function": _torch_class_path(activation),
        })
        tensors = {"linear.weight": weight.contiguous()} | ({"linear.bias": bias.contiguous()} if bias is not None else {})
        save_file(tensors, str(folder / "model.safetensors"))
    if normalize:
        add("Normalize", None)
    (out / "modules.json").write_text(json.dumps(modules))
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}))
    st_config: dict[str, Any] = {"prompts": prompts or {}, "default_prompt_name": default_prompt_name,
                                 "similarity_fn_name": "cosine"}
    (out / "config_sentence_transformers.json").write_text(json.dumps(st_config))
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


def _torch_class_path(name: str) -> str:
    """torch.nn.Tanh -> 'torch.nn.modules.activation.Tanh', as sentence-transformers writes it."""
    import torch

    cls = getattr(torch.nn, name)
    return f"{cls.__module__}.{cls.__name__}"


def train_unigram_bert_layout(corpus: Path) -> Any:
    """Unigram in mdeberta-v3's layout: [PAD] 0, [CLS] 1, [SEP] 2, [UNK] 3, [MASK] last."""
    import json

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    base = train_unigram(corpus)
    data = json.loads(base.backend_tokenizer.to_str())
    names = {"<pad>": "[PAD]", "<s>": "[CLS]", "</s>": "[SEP]", "<unk>": "[UNK]", "<mask>": "[MASK]"}
    order = {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "[UNK]": 3}
    vocab = data["model"]["vocab"]
    for entry in vocab:
        entry[0] = names.get(entry[0], entry[0])
    vocab.sort(key=lambda e: order.get(e[0], 4))
    data["model"]["unk_id"] = 3
    for added in data["added_tokens"]:
        added["content"] = names.get(added["content"], added["content"])
        added["id"] = order.get(added["content"], added["id"])
    data["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                   {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                 {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
        "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [1], "tokens": ["[CLS]"]},
                           "[SEP]": {"id": "[SEP]", "ids": [2], "tokens": ["[SEP]"]}},
    }
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(data)), pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", unk_token="[UNK]", mask_token="[MASK]", bos_token="[CLS]", eos_token="[SEP]",
    )


# mdeberta-v3-base's config.json fields beyond the sizes (disentangled relative attention, legacy MLM head)
MDEBERTA_CONFIG = {
    "relative_attention": True, "max_relative_positions": -1, "pos_att_type": ["p2c", "c2p"],
    "position_biased_input": False, "type_vocab_size": 0, "norm_rel_ebd": "layer_norm", "share_att_key": True,
    "legacy": True,
}


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
