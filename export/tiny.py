"""Tiny, deterministic BERT and ModernBERT checkpoints with tokenizers trained on our own text.

They stand in for the real models where the hub is unreachable (CI, the README's default run):
same architectures and code paths, a few layers wide, and a ModernBERT local window small enough
(16 tokens) that ordinary sentences cross it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]  # ids 0..4, as in mmBERT


def _lines(corpus: Path) -> list[str]:
    return [line.strip() for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]


def train_wordpiece(corpus: Path, vocab_size: int = 1200) -> Any:
    """Cased WordPiece like mBERT's: BERT normalizer without lower-casing, [CLS] x [SEP]."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(
        _lines(corpus), trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=BERT_SPECIALS)
    )
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def train_gemma_like(corpus: Path, vocab_size: int = 1500) -> Any:
    """Metaspace BPE with mmBERT's special-token layout (pad 0, eos 1, bos 2, unk 3, mask 4)."""
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    specials = [AddedToken(t, special=True, lstrip=(t == "<mask>")) for t in GEMMA_SPECIALS]
    tok.train_from_iterator(_lines(corpus), trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials))
    bos, eos = tok.token_to_id("<bos>"), tok.token_to_id("<eos>")
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", pair="<bos> $A <eos> $B <eos>", special_tokens=[("<bos>", bos), ("<eos>", eos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        cls_token="<bos>",
        sep_token="<eos>",
        mask_token="<mask>",
    )


def save_checkpoint(model: Any, tokenizer: Any, out: Path) -> Path:
    """A Hugging Face directory (safetensors + tokenizer files), without transformers' progress bars."""
    from polyglot_onnx.export.loading import quiet_transformers

    out.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return out


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


def build_tiny_modernbert(out: Path, corpus: Path, seed: int = 0, initializer_range: float = 0.02) -> Path:
    """A 3-layer ModernBERT (local, local, global) with a 16-token window and GeGLU, no biases."""
    import torch
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    tokenizer = train_gemma_like(corpus)
    torch.manual_seed(seed)
    config = ModernBertConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=96,
        local_attention=16,
        global_attn_every_n_layers=3,
        max_position_embeddings=512,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        cls_token_id=2,
        sep_token_id=1,
        initializer_range=initializer_range,
    )
    model = ModernBertForMaskedLM(config).eval()
    return save_checkpoint(model, tokenizer, out)


@dataclass(frozen=True)
class TinyModel:
    name: str
    build: Callable[[Path, Path], Path]


TINY_MODELS: dict[str, TinyModel] = {
    m.name: m
    for m in (
        TinyModel("tiny-bert", lambda out, corpus: build_tiny_bert(out, corpus)),
        TinyModel("tiny-modernbert", lambda out, corpus: build_tiny_modernbert(out, corpus)),
    )
}


def default_corpus() -> Path:
    """The project's multilingual text, found beside the source tree (editable installs, clones)."""
    from polyglot_onnx.errors import ModelNotFoundError

    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "tests" / "data" / "multilingual.txt"
        if candidate.is_file():
            return candidate
    raise ModelNotFoundError(
        "tests/data/multilingual.txt not found (installed without the source tree): pass --corpus FILE"
    )
