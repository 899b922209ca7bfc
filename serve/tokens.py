"""Request text -> token ids and counts, on the runtime's TextEncoder; refusals name the field.

The queue budgets by tokens, so every input is tokenized once here, before it is queued. Token-id
inputs are taken as model input ids as given (what ``/tokenize`` returns, special tokens included).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from polyglot_onnx.runtime.text import dropped_tokens
from polyglot_onnx.serve.errors import Kind, ServeError


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    length: int  # before truncation
    truncated: bool


def check_text(text: str, field: str) -> None:
    """JSON may carry lone surrogates ("\\ud800"); tokenizers cannot take them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ServeError(
            Kind.VALIDATION,
            f"{field} contains a lone surrogate (\\u{ord(text[err.start]):04x} at character {err.start}), "
            "which is not valid Unicode text: send well-formed UTF-16 pairs or remove it",
            code="invalid_value",
            param=field,
        ) from None


def full_length(encoding: Any) -> int:
    """Tokens the text has before truncation (overflow pieces carry their own special tokens)."""
    return len(encoding.ids) + dropped_tokens(encoding)


class Tokens:
    """One model's tokenization for the server: right- and left-truncating, and untruncated views."""

    def __init__(self, text_encoder: Any) -> None:
        self.encoder = text_encoder
        self.max_length: int = int(text_encoder.max_length)
        self.vocab_size: int = int(text_encoder.tokenizer.get_vocab_size(with_added_tokens=True))
        self._clones: dict[str, Any] = {}

    def _tokenizer(self, direction: str) -> Any:
        """The runtime's own tokenizer for right truncation; a configured copy for left / none."""
        if direction == "right":
            return self.encoder.tokenizer
        if direction not in self._clones:
            from tokenizers import Tokenizer

            clone = Tokenizer.from_str(self.encoder.tokenizer.to_str())
            clone.no_padding()
            if direction == "left":
                clone.enable_truncation(self.max_length, direction="left")
            else:
                clone.no_truncation()
            self._clones[direction] = clone
        return self._clones[direction]

    def encode(self, texts: Sequence[str], field: str, truncate: bool, direction: str = "right") -> list[Encoded]:
        """Ids the model will see; without ``truncate`` an over-long input is a 422 naming its length."""
        for i, text in enumerate(texts):
            check_text(text, f"{field}[{i}]" if len(texts) > 1 else field)
        encodings = self._tokenizer(direction).encode_batch(list(texts))
        out = []
        for i, enc in enumerate(encodings):
            length = full_length(enc)
            if length > self.max_length and not truncate:
                raise ServeError(
                    Kind.VALIDATION,
                    f"{field}[{i}] has {length} tokens, over the model maximum of {self.max_length}: shorten it, "
                    "or send truncate=true (the server was started with --no-auto-truncate)",
                    code="context_length_exceeded",
                    param=field,
                )
            out.append(Encoded(list(enc.ids), length, length > len(enc.ids)))
        return out

    def check_ids(self, rows: Sequence[Sequence[int]], field: str, truncate: bool) -> list[Encoded]:
        """Token-id inputs: in the vocabulary, not empty, and within the model maximum."""
        out = []
        for i, row in enumerate(rows):
            name = f"{field}[{i}]" if len(rows) > 1 or field.endswith("]") else field
            if not row:
                raise ServeError(Kind.EMPTY, f"{name} is an empty token list: pass at least one id", param=field)
            bad = next((t for t in row if not 0 <= t < self.vocab_size), None)
            if bad is not None:
                raise ServeError(
                    Kind.VALIDATION,
                    f"{name} holds token id {bad}, outside this model's vocabulary of {self.vocab_size}: "
                    "send ids from this model's /tokenize",
                    code="invalid_value",
                    param=field,
                )
            if len(row) > self.max_length and not truncate:
                raise ServeError(
                    Kind.VALIDATION,
                    f"{name} has {len(row)} tokens, over the model maximum of {self.max_length}: shorten it, "
                    "or send truncate=true",
                    code="context_length_exceeded",
                    param=field,
                )
            ids = list(row[: self.max_length])
            out.append(Encoded(ids, len(row), len(row) > len(ids)))
        return out

    def detail(self, texts: Sequence[str], field: str, add_special_tokens: bool) -> list[list[dict[str, Any]]]:
        """TEI's /tokenize: per input, each token's id, text, special flag and character span."""
        for i, text in enumerate(texts):
            check_text(text, f"{field}[{i}]" if len(texts) > 1 else field)
        encodings = self._tokenizer("none").encode_batch(list(texts), add_special_tokens=add_special_tokens)
        out = []
        for text, enc in zip(texts, encodings):
            tokens = []
            for tid, tok, (start, stop), special in zip(enc.ids, enc.tokens, enc.offsets, enc.special_tokens_mask):
                tokens.append(
                    {"id": tid, "text": tok, "special": bool(special), "start": None if special else start,
                     "stop": None if special else stop}
                )
            out.append(tokens)
        return out

    def mask_count(self, ids: Sequence[int], mask_id: int) -> int:
        return sum(1 for t in ids if t == mask_id)
