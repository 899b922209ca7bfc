"""Texts longer than the model maximum: the whole tokenization, cut into overlapping windows.

The runtime's tokenizer truncates, but keeps the rest of a long text in ``overflowing`` pieces,
each framed by its own special tokens; gluing their content back together gives the untruncated
encoding (ids, tokens, offsets, word ids) without a second tokenizer. A document is then cut into
windows of the model's maximum length, each framed by the special tokens again; every token takes
its vector from the window whose centre is nearest (the most context on both sides), the leading
specials from the first window and the trailing ones from the last.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from polyglot_onnx import manifest as mf
from polyglot_onnx.errors import InputError
from polyglot_onnx.runtime.text import DEFAULT_TEXT_LIMITS, TextLimits

log = logging.getLogger("polyglot_onnx")

LONG_TEXT_MODES = ("truncate", "window")


@dataclass(frozen=True)
class Document:
    """An untruncated encoding with the attributes the runtime reads from a tokenizers Encoding."""

    ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]
    word_ids: list[int | None]
    prefix: int  # special tokens before the text
    suffix: int  # special tokens after the text
    overflowing: tuple[()] = ()  # nothing is left out

    @property
    def content(self) -> list[int]:
        return self.ids[self.prefix : len(self.ids) - self.suffix]


def check_mode(long_text: str) -> None:
    if long_text not in LONG_TEXT_MODES:
        raise InputError(f"unknown long_text {long_text!r}: choose {' or '.join(LONG_TEXT_MODES)}")


def special_frame(tokenizer: Any) -> tuple[int, int]:
    """How many special tokens the post-processor puts before and after a text."""
    framed = tokenizer.encode("x").ids
    inner = tokenizer.encode("x", add_special_tokens=False).ids
    start = next(i for i in range(len(framed)) if framed[i : i + len(inner)] == inner)
    return start, len(framed) - start - len(inner)


def whole_document(encoding: Any, prefix: int, suffix: int, detail: bool = True) -> Document:
    """Glue a truncated encoding and its overflowing pieces back into the full token sequence.

    ``detail=False`` glues the ids only (tokens, offsets and word ids stay empty): what a caller that
    needs vectors, not words, keeps in memory for a long document.
    """
    pieces = [encoding, *encoding.overflowing]

    def glued(attr: str) -> list[Any]:
        head = list(getattr(pieces[0], attr))[:prefix]
        tail = list(getattr(pieces[-1], attr))[len(getattr(pieces[-1], attr)) - suffix :]
        body = [x for p in pieces for x in list(getattr(p, attr))[prefix : len(getattr(p, attr)) - suffix]]
        return head + body + tail

    if not detail:
        return Document(glued("ids"), [], [], [], prefix, suffix)
    offsets = [tuple(o) for o in glued("offsets")]
    return Document(glued("ids"), glued("tokens"), offsets, glued("word_ids"), prefix, suffix)


def window_starts(n_tokens: int, room: int, stride: int) -> list[int]:
    """Start of each window over ``n_tokens`` content tokens; the last window ends at the text's end."""
    if n_tokens <= room:
        return [0]
    return list(range(0, n_tokens - room, stride)) + [n_tokens - room]


def default_stride(room: int) -> int:
    """Half a window: every token is then at least a quarter window from its window's edges."""
    return max(room // 2, 1)


def check_stride(stride: int | None, room: int, limits: TextLimits = DEFAULT_TEXT_LIMITS) -> int:
    if stride is None:
        return default_stride(room)
    if not isinstance(stride, int) or isinstance(stride, bool) or not 1 <= stride <= room:
        raise InputError(
            f"window_stride must be an integer from 1 to {room} (the text tokens one window holds), got {stride!r}"
        )
    least = limits.min_stride(room)
    if stride < least:
        raise InputError(
            f"window_stride {stride} reads each token in up to {-(-room // stride)} windows, over the limit of "
            f"{limits.reads_per_token} (TextLimits.reads_per_token): use a window_stride of at least {least}"
        )
    return stride


@dataclass(frozen=True)
class Windows:
    """One document cut into windows of ``room`` text tokens starting at ``starts``."""

    doc: Document
    room: int
    starts: list[int]

    def rows(self) -> list[list[int]]:
        """Model inputs: each window framed by the document's own special tokens."""
        head, tail = self.doc.ids[: self.doc.prefix], self.doc.ids[len(self.doc.ids) - self.doc.suffix :]
        content = self.doc.content
        return [head + content[s : s + self.room] + tail for s in self.starts]

    def owners(self) -> np.ndarray:
        """For each text token, the window whose centre is nearest (the first on a tie); non-decreasing."""
        centres = np.asarray(self.starts) + (self.room - 1) / 2
        positions = np.arange(len(self.doc.content))
        right = np.minimum(np.searchsorted(centres, positions), len(centres) - 1)
        left = np.maximum(right - 1, 0)
        nearer_left = np.abs(positions - centres[left]) <= np.abs(positions - centres[right])
        return np.where(nearer_left, left, right)

    def owned(self) -> list[tuple[int, int]]:
        """For each window, the rows of its own output that go into the document, as (first, end):
        the tokens nearest its centre, plus the leading specials (first window) and trailing ones (last).
        Consecutive windows' rows follow each other, so the document is their concatenation."""
        prefix, owner, last = self.doc.prefix, self.owners(), len(self.starts) - 1
        spans = []
        for k, start in enumerate(self.starts):
            lo, hi = int(np.searchsorted(owner, k, side="left")), int(np.searchsorted(owner, k, side="right"))
            first = 0 if k == 0 else prefix + lo - start
            end = prefix + self.room + self.doc.suffix if k == last else prefix + hi - start
            spans.append((first, end))
        return spans

    def merge(self, vectors: Sequence[np.ndarray]) -> np.ndarray:
        """[len(doc.ids), hidden] from one [prefix + room + suffix, hidden] array per window."""
        return np.concatenate([v[a:b] for v, (a, b) in zip(vectors, self.owned())])


def plan(doc: Document, max_length: int, stride: int | None, limits: TextLimits = DEFAULT_TEXT_LIMITS) -> Windows:
    room = max_length - doc.prefix - doc.suffix
    step = check_stride(stride, room, limits)
    return Windows(doc, room, window_starts(len(doc.content), room, step))


def check_windows(counts: Sequence[int], limits: TextLimits = DEFAULT_TEXT_LIMITS) -> None:
    """Windows per text and per call within the limits, checked before any window runs."""
    for i, count in enumerate(counts):
        if count > limits.windows_per_text:
            raise InputError(
                f"text {i} needs {count} windows, over the limit of {limits.windows_per_text} per text "
                "(TextLimits.windows_per_text): split the text, or use a larger window_stride"
            )
    if sum(counts) > limits.windows_per_call:
        raise InputError(
            f"the texts need {sum(counts)} windows, over the limit of {limits.windows_per_call} per call "
            "(TextLimits.windows_per_call): pass fewer long texts per call"
        )


def window_part(vectors: np.ndarray, span: tuple[int, int], pooled_output: str, first: bool) -> np.ndarray | None:
    """One window's share of a long text's pooled vector, so the windows need not be kept.

    Mean: the float64 sum of the rows it owns (the pooled vector is the sum over windows / tokens);
    CLS: the first window's first row, nothing from the others.
    """
    if pooled_output == mf.CLS_EMBEDDING:
        return np.array(vectors[0]) if first else None
    part: np.ndarray = vectors[span[0] : span[1]].sum(axis=0, dtype=np.float64)
    return part


def pooled_from_parts(parts: Sequence[np.ndarray | None], n_tokens: int, pooled_output: str) -> np.ndarray:
    """A long text's pooled vector from its windows' parts (window_part), in window order."""
    if pooled_output == mf.CLS_EMBEDDING:
        return np.asarray(parts[0], dtype=np.float32)
    total = np.sum(np.stack([p for p in parts if p is not None]), axis=0)
    pooled: np.ndarray = (total / n_tokens).astype(np.float32)
    return pooled


def centred_window(doc: Document, position: int, max_length: int) -> tuple[list[int], int]:
    """A model-length window centred on ``position`` (an index into doc.ids): its ids and the position in it."""
    room = max_length - doc.prefix - doc.suffix
    content = doc.content
    t = position - doc.prefix
    start = min(max(t - room // 2, 0), max(len(content) - room, 0))
    head, tail = doc.ids[: doc.prefix], doc.ids[len(doc.ids) - doc.suffix :]
    return head + content[start : start + room] + tail, doc.prefix + t - start


def from_whole(encoding: Any, prefix: int, suffix: int, detail: bool = True) -> Document:
    """A Document from an untruncated encoding (TextEncoder.whole): the same as gluing the pieces back."""
    if not detail:
        return Document(list(encoding.ids), [], [], [], prefix, suffix)
    offsets = [tuple(o) for o in encoding.offsets]
    return Document(list(encoding.ids), list(encoding.tokens), offsets, list(encoding.word_ids), prefix, suffix)


def read_whole(text: Any, texts: list[str], detail: bool = True) -> list[Any]:
    """Each text's whole encoding: a Document when it is over the maximum, else the encoding itself."""
    encodings: list[Any] = text.whole(texts)
    if all(len(e) <= text.max_length for e in encodings):
        return encodings
    prefix, suffix = special_frame(text.tokenizer)
    return [from_whole(e, prefix, suffix, detail) if len(e) > text.max_length else e for e in encodings]


def whole_documents(encodings: Sequence[Any], tokenizer: Any, detail: bool = True) -> list[Any]:
    """Each encoding as is, or glued back into a Document when the tokenizer truncated it."""
    if not any(e.overflowing for e in encodings):
        return list(encodings)
    prefix, suffix = special_frame(tokenizer)
    return [whole_document(e, prefix, suffix, detail) if e.overflowing else e for e in encodings]


def run_windowed(
    engine: Any, encodings: Sequence[Any], batch_size: int, pooled_output: str, stride: int | None, all_tokens: bool,
    limits: TextLimits = DEFAULT_TEXT_LIMITS,
) -> tuple[list[Any], list[np.ndarray], list[np.ndarray | None]]:
    """Per text: its (whole) encoding, pooled vector, and token vectors (long texts if asked, others too).

    Windows of long texts and the short texts run together in length-sorted batches; a long text's
    pooled vector is pooled over its merged token vectors (mean over every token, or the first). Each
    window keeps only what it contributes (its share of the pool, or the rows it owns), so memory is
    the document's size, not windows x window.
    """
    from polyglot_onnx.runtime.text import length_sorted_batches, pad_ids

    text = engine.text
    docs = whole_documents(encodings, text.tokenizer)
    plans: dict[int, Windows] = {i: plan(d, text.max_length, stride, limits) for i, d in enumerate(docs)
                                 if isinstance(d, Document)}
    check_windows([len(plans[i].starts) if i in plans else 0 for i in range(len(docs))], limits)
    rows: list[list[int]] = []
    owner: list[tuple[int, int]] = []  # (text, window) per row
    for i, doc in enumerate(docs):
        if i in plans:
            log.info(
                "text %d has %d tokens, over the model maximum of %d: embedded as %d overlapping windows "
                "(stride %d tokens), each token taken from the window where it is nearest the centre",
                i, len(doc.ids), text.max_length, len(plans[i].starts), stride or default_stride(plans[i].room),
            )
        new = plans[i].rows() if i in plans else [list(doc.ids)]
        rows += new
        owner += [(i, k) for k in range(len(new))]
    spans = {i: p.owned() for i, p in plans.items()}
    pooled_rows: dict[int, np.ndarray] = {}
    kept: dict[int, np.ndarray | None] = {}  # per row: its pool part, or its owned token rows
    for batch in length_sorted_batches([len(r) for r in rows], batch_size):
        ids, attn = pad_ids([rows[r] for r in batch], text.info.pad_token_id, text.pad_to_multiple)
        pooled, hidden = engine.run([pooled_output, mf.TOKEN_EMBEDDINGS], ids, attn)
        engine.ensure_finite(pooled, [owner[r][0] for r in batch])
        for row, r in enumerate(batch):
            i, k = owner[r]
            pooled_rows[r] = pooled[row]
            vectors = hidden[row, : len(rows[r])]
            if all_tokens or i in plans:
                engine.ensure_finite(vectors, [i] * len(vectors))
            if i in plans and not all_tokens:
                kept[r] = window_part(vectors, spans[i][k], pooled_output, k == 0)
            elif i in plans:
                a, b = spans[i][k]
                kept[r] = np.array(vectors[a:b])
            elif all_tokens:
                kept[r] = np.array(vectors)
        del hidden
    by_text: dict[int, list[int]] = {}
    for r, (i, _) in enumerate(owner):
        by_text.setdefault(i, []).append(r)
    pooled_out: list[np.ndarray] = []
    hidden_out: list[np.ndarray | None] = []
    for i in range(len(docs)):
        mine = by_text[i]
        if i in plans and not all_tokens:
            hidden_out.append(None)
            pooled_out.append(pooled_from_parts([kept[r] for r in mine], len(docs[i].ids), pooled_output))
        elif i in plans:
            merged = np.concatenate([kept[r] for r in mine])
            hidden_out.append(merged)
            pooled_out.append(merged[0] if pooled_output == mf.CLS_EMBEDDING else merged.mean(axis=0))
        else:
            hidden_out.append(kept.get(mine[0]))
            pooled_out.append(pooled_rows[mine[0]])
    return docs, pooled_out, hidden_out


MaskRow = tuple[list[int], list[int], list[tuple[int, int]]]


def mask_rows(docs: Sequence[Any], masks: Sequence[np.ndarray], max_length: int) -> list[MaskRow]:
    """Fill-mask rows: (ids, mask positions in the row, (text, k-th mask) for each position).

    A text within the maximum is one row with all its masks; a longer one gives one window per
    mask, centred on it (other masks inside that window stay masked, as in the whole text).
    """
    out = []
    for i, doc in enumerate(docs):
        if not isinstance(doc, Document):
            out.append((list(doc.ids), [int(p) for p in masks[i]], [(i, k) for k in range(len(masks[i]))]))
            continue
        log.info(
            "input %d has %d tokens, over the model maximum of %d: each of its %d mask(s) is predicted "
            "in a %d-token window centred on it",
            i, len(doc.ids), max_length, len(masks[i]), max_length,
        )
        for k, position in enumerate(masks[i]):
            ids, inner = centred_window(doc, int(position), max_length)
            out.append((ids, [inner], [(i, k)]))
    return out
