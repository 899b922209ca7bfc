"""Input checking and tokenization for the runtime (tokenizers only, no transformers)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from polyglot_onnx.errors import InputError, PackageError, TruncationWarning
from polyglot_onnx.manifest import TokenizerInfo

log = logging.getLogger("polyglot_onnx")

# Per-call bounds (docs/package-format.md "Limits"): larger corpora are streamed in chunks (jobs/ does).
MAX_TEXTS = 100_000
MAX_BATCH_SIZE = 65_536
# Each batch also stays under this many padded tokens (rows x longest), whatever batch_size says:
# 32 rows at mmBERT's 8,192 maximum, so the default batch_size never splits.
MAX_BATCH_TOKENS = 32 * 8192
# A token covers at most this many characters in practice (WordPiece turns a word over 100 characters
# into one [UNK]); a truncated text is cut to max_length x this before the tokenizer reads it. The cut is
# checked (see cut_for_truncation), so a text that breaks the bound is only tokenized whole, never changed.
CHARS_PER_TOKEN = 32
# Characters tokenized at a time when only a count is needed (TextEncoder.count_tokens).
COUNT_SEGMENT_CHARS = 65536


@dataclass(frozen=True)
class TextLimits:
    """Per-call bounds on the work one call may ask for (docs/package-format.md "Limits"); the server passes the
    same object.

    A text read whole as windows costs one forward pass per window, so a long document, a tiny
    ``window_stride`` or a huge prompt would cost minutes and gigabytes; these bounds refuse such a
    call before any work, with the limit named. The defaults are far above ordinary use.
    """

    windows_per_text: int = 4096  # long_text='window': windows one text may be cut into
    windows_per_call: int = 8192
    reads_per_token: int = 64  # window_stride >= room / this: no token is read by more windows
    prompt_chars: int = 8192  # characters of an explicit prompt (it is prepended to every text)

    def __post_init__(self) -> None:
        for name in ("windows_per_text", "windows_per_call", "reads_per_token", "prompt_chars"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"TextLimits.{name} must be a positive integer, got {value!r}")

    def min_stride(self, room: int) -> int:
        """The smallest window_stride allowed for windows of ``room`` text tokens."""
        return max(1, -(-room // self.reads_per_token))

    def check_prompt(self, prompt: str | None) -> None:
        if prompt is not None and len(prompt) > self.prompt_chars:
            raise InputError(
                f"prompt has {len(prompt)} characters, over the limit of {self.prompt_chars} "
                "(TextLimits.prompt_chars): shorten it, or load with limits=TextLimits(prompt_chars=...)"
            )


DEFAULT_TEXT_LIMITS = TextLimits()


def cut_bound(max_length: int) -> int:
    """Characters a truncating tokenizer needs to see for ``max_length`` tokens (see CHARS_PER_TOKEN)."""
    return max_length * CHARS_PER_TOKEN


def cut_for_truncation(tokenizer: Any, texts: Sequence[str], max_length: int, left: bool = False,
                       **options: Any) -> tuple[list[Any], set[int]]:
    """``tokenizer.encode_batch(texts)`` for a truncating tokenizer, reading at most cut_bound characters.

    The tokenizer reads the whole text even though it keeps max_length tokens (a 2 MB text becomes
    half a million tokens of overflow). A long text is cut first; the cut is kept only when the result
    provably equals the uncut one: the cut text still overflows and the kept tokens end in an earlier
    pre-tokenized word than the one the cut splits (normalizers and pre-tokenizers act per word, so
    earlier words are tokenized exactly as in the whole text). Otherwise the text is tokenized whole.
    Only the overflow differs (it is cut short too). ``left``: the tokenizer truncates on the left.
    Returns the encodings and the indices of the texts that were cut.
    """
    bound = cut_bound(max_length)
    long = [i for i, t in enumerate(texts) if len(t) > bound]
    if not long:
        return list(tokenizer.encode_batch(list(texts), **options)), set()
    cut = [(t[-bound:] if left else t[:bound]) if len(t) > bound else t for t in texts]
    encodings = list(tokenizer.encode_batch(cut, **options))
    redo = [i for i in long if not _cut_is_exact(encodings[i], left)]
    if redo:
        for i, enc in zip(redo, tokenizer.encode_batch([texts[i] for i in redo], **options)):
            encodings[i] = enc
    return encodings, set(long) - set(redo)


def _cut_is_exact(encoding: Any, left: bool) -> bool:
    """The kept tokens lie in whole words before (after, for left truncation) the word the cut splits."""
    if not encoding.overflowing:
        return False
    kept: list[int] = [w for w in encoding.word_ids if w is not None]
    rest: list[int] = [w for o in encoding.overflowing for w in o.word_ids if w is not None]
    if not kept or not rest:
        return False
    if left:  # the cut splits the first word of the cut text: it lies in the overflow, before the kept ones
        return min(kept) > min(rest)
    return max(kept) < max(rest)


def dropped_tokens(encoding: Any) -> int:
    """Tokens truncation cut from one encoding (its overflow pieces, less the special tokens each carries)."""
    return sum(len(o.ids) - sum(o.special_tokens_mask) for o in encoding.overflowing)


def lone_surrogate(text: str) -> tuple[int, int] | None:
    """(position, code point) of the first lone surrogate, which tokenizers cannot take; else None."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return err.start, ord(text[err.start])
    return None


def check_unicode(texts: Sequence[str], what: str) -> None:
    for i, text in enumerate(texts):
        found = lone_surrogate(text)
        if found:
            pos, code = found
            origin = " (a byte that is not UTF-8, kept by surrogateescape)" if 0xDC80 <= code <= 0xDCFF else ""
            raise InputError(
                f"{what}[{i}] contains a lone surrogate U+{code:04X} at character {pos}{origin}: pass valid "
                "Unicode text (decode bytes as UTF-8, e.g. with errors='replace')"
            )


def as_text_list(texts: str | Sequence[str], what: str = "texts") -> tuple[list[str], bool]:
    """Normalise the caller's input to a list; remember whether a single string was passed."""
    if isinstance(texts, str):
        check_unicode([texts], what)
        return [texts], True
    if isinstance(texts, (bytes, bytearray)):
        raise InputError(f"{what} must be str, not bytes: decode it first (e.g. data.decode('utf-8'))")
    if not isinstance(texts, Sequence):
        raise InputError(f"{what} must be a string or a list of strings, not {type(texts).__name__}")
    if len(texts) > MAX_TEXTS:
        raise InputError(f"{what} has {len(texts)} items, over the limit of {MAX_TEXTS} per call: pass them in chunks")
    items = list(texts)
    if not items:
        raise InputError(f"{what} is an empty list: pass at least one string")
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise InputError(f"{what}[{i}] is {type(item).__name__}, not str: pass strings only")
    check_unicode(items, what)
    return items, False


class TextEncoder:
    """tokenizer.json plus the facts the manifest records about it (mask, pad, max length)."""

    def __init__(self, source: bytes, info: TokenizerInfo, graph_vocab: int) -> None:
        """``source``: tokenizer.json's bytes, read (and hashed) by runtime.package, never reopened here."""
        from tokenizers import Tokenizer

        try:
            self.tokenizer = Tokenizer.from_str(source.decode("utf-8"))
        except Exception as err:  # tokenizers raises a bare Exception on malformed JSON
            raise PackageError(
                f"{info.file} cannot be read by tokenizers ({str(err)[:200]}): re-export the package"
            ) from err
        self.info = info
        self.max_length = info.max_length
        # CUDA's memory-efficient attention (ModernBERT's windowed mask) needs lengths divisible by 4.
        self.pad_to_multiple = 1
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)
        self._whole: Any = None
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

    def set_max_length(self, max_length: int) -> None:
        """Truncate at ``max_length`` tokens from now on (sentence-transformers' ``max_seq_length = n``).

        Never past the package's maximum (the graph's position table ends there), and above the special tokens
        so a text keeps a token of its own; windows (long_text='window') then use the shorter length too.
        """
        least = len(self._whole_tokenizer().encode("", add_special_tokens=True).ids) + 1
        valid = isinstance(max_length, int) and not isinstance(max_length, bool)
        if not valid or not least <= max_length <= self.info.max_length:
            raise InputError(f"max_seq_length {max_length!r} is not allowed: pass an integer from {least} to "
                             f"{self.info.max_length} (the package's maximum: the graph's positions end there)")
        self.max_length = max_length
        self.tokenizer.enable_truncation(max_length)

    def encode(self, texts: list[str], truncating: bool = True, stacklevel: int = 3) -> list[Any]:
        """Encode with truncation to the model maximum.

        One warning per call with a message that is the same for every text (the warnings registry keeps
        each distinct message forever, so per-text counts in it grow without bound in a long process);
        each text's dropped-token count goes to the 'polyglot_onnx' logger at INFO. ``truncating=False``:
        the caller reads the overflowing pieces back (runtime/long_text.py), so nothing is said.
        ``stacklevel``: the warning names the line of the user's call, however deep this one sits.
        """
        check_unicode(texts, "texts")
        if not truncating:
            return self.tokenizer.encode_batch(texts)
        encodings, cut = cut_for_truncation(self.tokenizer, texts, self.max_length)
        truncated = False
        for i, enc in enumerate(encodings):
            if enc.overflowing:
                truncated = True
                log.info(
                    "text %d is longer than the model maximum of %d tokens: %s%d tokens were dropped from the end",
                    i, self.max_length, "more than " if i in cut else "", dropped_tokens(enc),
                )
        if truncated:
            warnings.warn(
                f"texts longer than the model maximum of {self.max_length} tokens were truncated at the end "
                "(the 'polyglot_onnx' logger says how many tokens each lost, at INFO)",
                TruncationWarning,
                stacklevel=stacklevel,
            )
        return encodings

    def count_tokens(self, text: str, stop_above: int) -> int:
        """Tokens of ``text`` (special tokens included), counted a segment at a time, stopping once past
        ``stop_above``: an encoding costs ~450 bytes a token, so a 2 MB text over a caller's limit is refused
        without ever being held whole. Segments end before a space; with a tokenizer that splits words at
        spaces (WordPiece, Metaspace, byte-level BPE) the count is exact, with one that does not, close."""
        specials = len(self._whole_tokenizer().encode("", add_special_tokens=True))
        total, start = specials, 0
        while start < len(text) and total <= stop_above:
            end = min(len(text), start + COUNT_SEGMENT_CHARS)
            if end < len(text):
                space = text.rfind(" ", start + 1, end)
                end = space if space > start else end
            total += len(self._whole_tokenizer().encode(text[start:end], add_special_tokens=False))
            start = end
        return total

    def _whole_tokenizer(self) -> Any:
        if self._whole is None:
            from tokenizers import Tokenizer

            self._whole = Tokenizer.from_str(self.tokenizer.to_str())
            self._whole.no_padding()
            self._whole.no_truncation()
        return self._whole

    def whole(self, texts: list[str]) -> list[Any]:
        """Encodings without truncation, for texts read whole: one piece each, where the truncating tokenizer
        would also keep every max_length piece as an overflow copy (twice the memory on a long document)."""
        check_unicode(texts, "texts")
        return list(self._whole_tokenizer().encode_batch(texts))

    def pad(self, encodings: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Right-pad to the longest in the batch: int64 ids and attention mask."""
        return pad_ids([e.ids for e in encodings], self.info.pad_token_id, self.pad_to_multiple)

    def decode_batch(self, rows: Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
        """Many decodes in one call (the tokenizer runs them in parallel): what ``decode`` gives, row by row."""
        if not rows:
            return []
        return list(self.tokenizer.decode_batch([list(r) for r in rows], skip_special_tokens=skip_special_tokens))


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
    """Indices grouped longest-first so each batch pads to similar lengths; callers restore order.

    A batch holds at most ``batch_size`` texts and MAX_BATCH_TOKENS padded tokens, so a large
    batch_size cannot ask for more memory than the default does at the longest model maximum.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise InputError(f"batch_size must be an integer from 1 to {MAX_BATCH_SIZE}, got {batch_size!r}")
    return token_budget_batches(lengths, MAX_BATCH_TOKENS, max_rows=batch_size)


def token_budget_batches(lengths: Sequence[int], max_tokens: int, max_rows: int | None = None) -> list[list[int]]:
    """Longest-first batches whose padded size (rows x longest) stays within ``max_tokens``.

    Counting padded tokens, not items, keeps memory and latency flat whether texts are short or long;
    a single text longer than the budget still gets a batch of its own. Callers restore order.
    """
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise InputError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    if max_rows is not None and (not isinstance(max_rows, int) or isinstance(max_rows, bool) or max_rows < 1):
        raise InputError(f"max_rows must be a positive integer or None, got {max_rows!r}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        batch = batches[-1] if batches else None
        # Sorted longest-first: the batch's first item sets its padded width.
        if batch and (len(batch) + 1) * max(lengths[batch[0]], 1) <= max_tokens and len(batch) < (max_rows or 1 << 62):
            batch.append(i)
        else:
            batches.append([i])
    return batches
