"""Request text -> token ids and counts, on the runtime's TextEncoder; refusals name the field.

The queue budgets by tokens, so every input is tokenized once here, before it is queued. Token-id
inputs are taken as model input ids as given (what ``/tokenize`` returns, special tokens included).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from polyglot_onnx.runtime.text import cut_for_truncation, dropped_tokens
from polyglot_onnx.serve.cost import BYTES_PER_TOKEN
from polyglot_onnx.serve.errors import Kind, ServeError
from polyglot_onnx.serve.responses import ROWS_PER_CHUNK, dumps

TRUNCATE_HINT = "shorten it, or send truncate=true"  # what to do about an input over the model maximum


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    length: int  # before truncation (at least this many when the text was cut before tokenizing)
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

    def encode(self, texts: Sequence[str], field: str, truncate: bool, direction: str = "right",
               at: Sequence[int] | None = None, hint: str = TRUNCATE_HINT) -> list[Encoded]:
        """Ids the model will see; without ``truncate`` an over-long input is a 422 naming its length and
        ``hint`` (why it was not truncated, and what to do). ``at``: each text's index in the request."""
        names = _names(field, len(texts), at)
        for text, name in zip(texts, names):
            check_text(text, name)
        tokenizer = self._tokenizer(direction)
        if truncate:  # a long text is cut to what the model can keep before the tokenizer reads it
            encodings, _ = cut_for_truncation(tokenizer, texts, self.max_length, left=direction == "left")
        else:
            encodings = tokenizer.encode_batch(list(texts))
        out = []
        for i, enc in enumerate(encodings):
            length = full_length(enc)
            if length > self.max_length and not truncate:
                raise ServeError(
                    Kind.VALIDATION,
                    f"{names[i]} has {length} tokens, over the model maximum of {self.max_length}: {hint}",
                    code="context_length_exceeded",
                    param=field,
                )
            out.append(Encoded(list(enc.ids), length, length > len(enc.ids)))
        return out

    def check_ids(self, rows: Sequence[Sequence[int]], field: str, truncate: bool, at: Sequence[int] | None = None,
                  hint: str = TRUNCATE_HINT) -> list[Encoded]:
        """Token-id inputs: in the vocabulary, not empty, and within the model maximum."""
        out = []
        for row, name in zip(rows, _names(field, len(rows), at)):
            self._check_row(row, name, field)
            if len(row) > self.max_length and not truncate:
                raise ServeError(
                    Kind.VALIDATION,
                    f"{name} has {len(row)} tokens, over the model maximum of {self.max_length}: {hint}",
                    code="context_length_exceeded",
                    param=field,
                )
            ids = list(row[: self.max_length])
            out.append(Encoded(ids, len(row), len(row) > len(ids)))
        return out

    def _check_row(self, row: Sequence[int], name: str, field: str) -> None:
        """A row of ids: not empty (400, as TEI), every id in the vocabulary (422)."""
        if not row:
            raise ServeError(Kind.EMPTY, f"`{name}` cannot be empty: an empty token list, pass at least one id",
                             code="empty_input", param=field)
        bad = next((t for t in row if not 0 <= t < self.vocab_size), None)
        if bad is not None:
            raise ServeError(Kind.VALIDATION, f"{name} holds token id {bad}, outside this model's vocabulary of "
                             f"{self.vocab_size}: send ids from this model's /tokenize", code="invalid_value",
                             param=field)

    def check_whole(self, texts: Sequence[str], max_tokens: int, field: str, why: str) -> None:
        """413 for a text with more than ``max_tokens`` tokens, counted without holding its whole encoding (a 2 MB
        text is ~700,000 tokens, ~300 MB as an encoding): for routes that read texts whole."""
        for i, text in enumerate(texts):
            if len(text) <= self.max_length:  # a token is at least a character: nothing to count
                continue
            count = self.encoder.count_tokens(text, max_tokens)
            if count > max_tokens:
                name = f"{field}[{i}]" if len(texts) > 1 else field
                raise ServeError(Kind.PAYLOAD, f"{name} has more than {max_tokens} tokens, {why}",
                                 code="request_too_expensive", param=field)

    def detail(self, texts: Sequence[str], field: str, add_special_tokens: bool, max_tokens: int | None = None,
               max_bytes: int | None = None) -> tuple[list[TokenDetail], int]:
        """TEI's /tokenize: per input, each token's id, text, special flag and character span, and the answer's
        estimated size. Over ``max_tokens`` tokens, or ``max_bytes`` (about 80 bytes a token, 40x the text), it is
        a 413, refused before any token becomes a Python object."""
        for i, text in enumerate(texts):
            check_text(text, f"{field}[{i}]" if len(texts) > 1 else field)
        if max_tokens is not None:
            self.check_whole(texts, max_tokens, field, "over the limit per request (--max-request-tokens): send "
                             "shorter texts")
        encodings = self._tokenizer("none").encode_batch(list(texts), add_special_tokens=add_special_tokens)
        count = sum(len(e) for e in encodings)
        if max_tokens is not None and count > max_tokens:
            raise ServeError(Kind.PAYLOAD, f"the inputs hold {count} tokens, over the limit of {max_tokens} per "
                             "request (--max-request-tokens): send shorter texts", code="request_too_expensive",
                             param=field)
        size = count * BYTES_PER_TOKEN + 2 * sum(len(t) for t in texts)
        if max_bytes is not None and size > max_bytes:
            raise ServeError(Kind.PAYLOAD, f"the answer would be about {size} bytes ({count} tokens), over the "
                             f"limit of {max_bytes} per request (--max-response-bytes): send shorter texts",
                             code="response_too_large", param=field)
        return [TokenDetail(e, t) for e, t in zip(encodings, texts)], size

    def decode(self, rows: Sequence[Sequence[int]], field: str, skip_special_tokens: bool) -> list[str]:
        """TEI's /decode: each row of ids back to text (ids checked against the vocabulary first)."""
        for row, name in zip(rows, _names(field, len(rows), None)):
            self._check_row(row, name, field)
        decoded: list[str] = self.encoder.decode_batch(rows, skip_special_tokens=skip_special_tokens)
        return decoded


def _names(field: str, count: int, at: Sequence[int] | None) -> list[str]:
    """How refusals name each input: ``inputs`` alone, else ``inputs[i]`` with i its index in the request."""
    if at is not None:
        return [f"{field}[{i}]" for i in at]
    return [f"{field}[{i}]" if count > 1 or field.endswith("]") else field for i in range(count)]


class TokenDetail:
    """One input's /tokenize answer, as TEI's: a token's ``text`` is the part of the input it covers (its
    special tokens: the token itself, with no span). Rendered a few hundred tokens at a time
    (serve/responses.py), so a long text's answer never exists as one dict per token all at once."""

    def __init__(self, encoding: Any, text: str) -> None:
        self.encoding = encoding
        self.text = text

    def _rows(self) -> Iterator[list[dict[str, Any]]]:
        enc, text = self.encoding, self.text
        ids, tokens, offsets, special = enc.ids, enc.tokens, enc.offsets, enc.special_tokens_mask
        for start in range(0, len(ids), ROWS_PER_CHUNK):
            yield [{"id": ids[k], "text": tokens[k], "special": True, "start": None, "stop": None} if special[k]
                   else {"id": ids[k], "text": text[offsets[k][0]:offsets[k][1]], "special": False,
                         "start": offsets[k][0], "stop": offsets[k][1]}
                   for k in range(start, min(start + ROWS_PER_CHUNK, len(ids)))]

    def plain(self) -> list[dict[str, Any]]:
        return [row for rows in self._rows() for row in rows]

    def json_pieces(self) -> Iterator[str]:
        yield "["
        for n, rows in enumerate(self._rows()):
            yield ("," if n else "") + dumps(rows)[1:-1]
        yield "]"
