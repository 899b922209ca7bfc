"""Input checking and tokenization for the runtime (tokenizers only, no transformers)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from polyglot_onnx.errors import InputError, PackageError, TruncationWarning
from polyglot_onnx.manifest import TokenizerInfo


def as_text_list(texts: str | Sequence[str], what: str = "texts") -> tuple[list[str], bool]:
    """Normalise the caller's input to a list; remember whether a single string was passed."""
    if isinstance(texts, str):
        return [texts], True
    if isinstance(texts, (bytes, bytearray)):
        raise InputError(f"{what} must be str, not bytes: decode it first (e.g. data.decode('utf-8'))")
    if not isinstance(texts, Sequence):
        raise InputError(f"{what} must be a string or a list of strings, not {type(texts).__name__}")
    items = list(texts)
    if not items:
        raise InputError(f"{what} is an empty list: pass at least one string")
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise InputError(f"{what}[{i}] is {type(item).__name__}, not str: pass strings only")
    return items, False


class TextEncoder:
    """tokenizer.json plus the facts the manifest records about it (mask, pad, max length)."""

    def __init__(self, path: Path, info: TokenizerInfo, graph_vocab: int) -> None:
        from tokenizers import Tokenizer

        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises a bare Exception on malformed JSON
            raise PackageError(f"{path.name} cannot be read by tokenizers ({err}): re-export the package") from err
        self.info = info
        self.max_length = info.max_length
        # CUDA's memory-efficient attention (ModernBERT's windowed mask) needs lengths divisible by 4.
        self.pad_to_multiple = 1
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)
        self._check_vocab(graph_vocab)

    def _check_vocab(self, graph_vocab: int) -> None:
        size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        if size > graph_vocab:
            raise PackageError(
                f"tokenizer.json has {size} tokens but the graph's embedding table has {graph_vocab} rows: "
                "the tokenizer does not belong to this model; re-export the package"
            )
        if self.info.mask_token is not None and self.tokenizer.token_to_id(self.info.mask_token) != self.info.mask_token_id:
            raise PackageError(
                f"tokenizer.json maps {self.info.mask_token} to {self.tokenizer.token_to_id(self.info.mask_token)}, "
                f"the graph expects {self.info.mask_token_id}: the tokenizer does not belong to this model"
            )

    def encode(self, texts: list[str]) -> list[Any]:
        """Encode with truncation to the model maximum, warning with the count of dropped tokens."""
        encodings = self.tokenizer.encode_batch(texts)
        for i, enc in enumerate(encodings):
            if enc.overflowing:
                dropped = sum(len(o.ids) - sum(o.special_tokens_mask) for o in enc.overflowing)
                warnings.warn(
                    f"text {i} is longer than the model maximum of {self.max_length} tokens: "
                    f"{dropped} tokens were dropped from the end",
                    TruncationWarning,
                    stacklevel=3,
                )
        return encodings

    def pad(self, encodings: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Right-pad to the longest in the batch: int64 ids and attention mask."""
        return pad_ids([e.ids for e in encodings], self.info.pad_token_id, self.pad_to_multiple)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)


def pad_ids(rows: Sequence[Sequence[int]], pad_id: int, multiple: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id rows to the longest (rounded up to ``multiple``): int64 ids and attention mask."""
    longest = max(len(r) for r in rows)
    width = -(-longest // multiple) * multiple
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return ids, mask


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped longest-first so each batch pads to similar lengths; callers restore order."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
