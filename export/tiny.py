"""What the tiny fixtures and the random-weight builds are made of: tokenizers trained on our own text in each
family's layout (WordPiece like mBERT's, Gemma-like BPE like mmBERT's, Unigram like XLM-RoBERTa's and
mDeBERTa's), checkpoint saving and sentence-transformers files.

The tiny checkpoints themselves are built by each family's file (export/families/<family>.py); they stand in
for the real models where the hub is unreachable (CI, the README's default run): same architectures and code
paths, a few layers wide.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]  # ids 0..4, as in mmBERT


def _lines(corpus: Path) -> list[str]:
    return [line.strip() for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]


def _framed(tok: Any, start: str, end: str, pair: str, **special: str) -> Any:
    """Frame every text with ``start`` ... ``end`` (and pairs per ``pair``), as a transformers fast tokenizer."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok.post_processor = processors.TemplateProcessing(
        single=f"{start} $A {end}", pair=pair,
        special_tokens=[(start, tok.token_to_id(start)), (end, tok.token_to_id(end))],
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, **special)


def train_wordpiece(corpus: Path, vocab_size: int = 1200) -> Any:
    """Cased WordPiece like mBERT's: BERT normalizer without lower-casing, [CLS] x [SEP]."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(
        _lines(corpus), trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=BERT_SPECIALS)
    )
    return _framed(tok, "[CLS]", "[SEP]", "[CLS] $A [SEP] $B:1 [SEP]:1", unk_token="[UNK]", pad_token="[PAD]",
                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def train_gemma_like(corpus: Path, vocab_size: int = 1500) -> Any:
    """Metaspace BPE with mmBERT's special-token layout (pad 0, eos 1, bos 2, unk 3, mask 4)."""
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        trainers,
    )

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    specials = [AddedToken(t, special=True, lstrip=(t == "<mask>")) for t in GEMMA_SPECIALS]
    tok.train_from_iterator(_lines(corpus), trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials))
    return _framed(tok, "<bos>", "<eos>", "<bos> $A <eos> $B <eos>", unk_token="<unk>", pad_token="<pad>",
                   bos_token="<bos>", eos_token="<eos>", cls_token="<bos>", sep_token="<eos>", mask_token="<mask>")


def save_checkpoint(model: Any, tokenizer: Any, out: Path) -> Path:
    """A Hugging Face directory (safetensors + tokenizer files), without transformers' progress bars."""
    from polyglot_onnx.export.loading import quiet_transformers

    out.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return out


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
        trainers,
    )

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=XLMR_SPECIALS, unk_token="<unk>", shrinking_factor=0.75
    )
    tok.train_from_iterator(_lines(corpus), trainer)
    tok.add_special_tokens([AddedToken("<mask>", special=True, lstrip=True)])
    return _framed(tok, "<s>", "</s>", "<s> $A </s> </s> $B </s>", bos_token="<s>", eos_token="</s>",
                   cls_token="<s>", sep_token="</s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")


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
