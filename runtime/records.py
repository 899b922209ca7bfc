"""What output="token" and output="word" give: one text's token or word vectors with their strings and
character offsets, built from a tokenizer encoding and the graph's token vectors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TokenEmbeddings:
    """One text's token vectors, with the token strings and (start, end) character offsets."""

    tokens: list[str]
    offsets: list[tuple[int, int]]
    embeddings: np.ndarray  # [n_tokens, hidden]


@dataclass(frozen=True)
class WordEmbeddings:
    """One text's word vectors: subword pieces mean-pooled back to the tokenizer's words."""

    words: list[str]
    offsets: list[tuple[int, int]]
    embeddings: np.ndarray  # [n_words, hidden]


def token_embeddings(encoding: Any, vectors: np.ndarray) -> TokenEmbeddings:
    """What output='token' gives for one text."""
    return TokenEmbeddings(list(encoding.tokens), [tuple(o) for o in encoding.offsets], np.array(vectors))


def word_embeddings(text: str, encoding: Any, vectors: np.ndarray) -> WordEmbeddings:
    """What output='word' gives (and the server's windows): the mean of each word's pieces; special tokens
    (word id None) are left out."""
    groups: dict[int, list[int]] = {}
    for position, word in enumerate(encoding.word_ids):
        if word is not None:
            groups.setdefault(word, []).append(position)
    words, offsets, pooled = [], [], []
    for positions in groups.values():
        start = encoding.offsets[positions[0]][0]
        end = encoding.offsets[positions[-1]][1]
        words.append(text[start:end].strip())
        offsets.append((start, end))
        pooled.append(vectors[positions].mean(axis=0))
    hidden = vectors.shape[-1]
    return WordEmbeddings(words, offsets, np.stack(pooled) if pooled else np.zeros((0, hidden), np.float32))
