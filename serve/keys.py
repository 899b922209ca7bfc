"""What the batching queue groups inputs by: one frozen dataclass per kind of model call.

Inputs with equal keys may share an onnxruntime call; the backend dispatches on the key's class with
``match``, so each kind's options are named fields, not positions in a tuple.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

SENTENCE = "sentence"
TOKEN = "token"
WORD = "word"
FILL_MASK = "fill-mask"
WINDOW = "window"


@dataclass(frozen=True)
class SentenceKey:
    """Pooled sentence vectors of texts within the model maximum."""

    kind: ClassVar[str] = SENTENCE


@dataclass(frozen=True)
class TokenKey:
    """Per-token vectors of texts within the model maximum."""

    kind: ClassVar[str] = TOKEN


@dataclass(frozen=True)
class WordKey:
    """Per-word vectors; texts within the maximum (or truncated), with the request's normalize and prompt."""

    normalize: bool
    prompt: str | None
    kind: ClassVar[str] = WORD


@dataclass(frozen=True)
class WindowKey:
    """One window of a text over the model maximum; ``pooling``: "mean", "cls" or "rows" (the token rows)."""

    pooling: str
    kind: ClassVar[str] = WINDOW


@dataclass(frozen=True)
class FillMaskKey:
    """Fill-mask rows with the request's k and, when scoring given words, their token ids."""

    top_k: int
    targets: tuple[int, ...] | None
    kind: ClassVar[str] = FILL_MASK


BatchKey = SentenceKey | TokenKey | WordKey | WindowKey | FillMaskKey


def output_key(output: str) -> SentenceKey | TokenKey:
    """The key of texts within the maximum for an output kind ("sentence" or "token")."""
    return SentenceKey() if output == SENTENCE else TokenKey()
