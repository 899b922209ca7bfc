"""Embedding requests' inputs: prompts, long texts read whole, and tokenization off the event loop.

Semantics are Embedder.encode's (runtime/sentence_options.py, runtime/long_text.py): a prompt is
prepended to each text and pooled with it, so its tokens count in usage and in the token budget;
with ``long_text='window'`` a text over the model maximum is embedded whole as overlapping windows.
Inputs within the maximum go to the batcher as token ids; a text read whole is cut into its windows
here (the runtime's plan and limits), and each window is queued on its own, so a long document runs
as many short batches that other requests' inputs interleave with. Each window returns only what its
text keeps (its share of the pooled vector, or the token rows it owns), joined back in order.
Tokenizing runs in a thread (``asyncio.to_thread``), so a large request does not hold up the loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import numpy as np

from polyglot_onnx.errors import InputError
from polyglot_onnx.runtime.embedder import check_window_pooling
from polyglot_onnx.runtime.long_text import (
    Windows,
    check_stride,
    check_windows,
    from_whole,
    pooled_from_parts,
    special_frame,
    window_starts,
)
from polyglot_onnx.runtime.records import word_embeddings
from polyglot_onnx.runtime.sentence_options import normalized, with_prompt
from polyglot_onnx.runtime.sentence_options import resolve_prompt as runtime_prompt
from polyglot_onnx.serve import backend as bk
from polyglot_onnx.serve import cost
from polyglot_onnx.serve.cost import Cost
from polyglot_onnx.serve.errors import Kind, ServeError
from polyglot_onnx.serve.keys import SENTENCE, BatchKey, WindowKey, WordKey, output_key
from polyglot_onnx.serve.service import Answer, Service
from polyglot_onnx.serve.tokens import TRUNCATE_HINT, Encoded, check_text


def split_inputs(value: Any) -> tuple[list[Any], bool, bool]:
    """(items, all are token ids, was a single input) for str | list[int] | a list of texts and id lists (TEI
    takes texts and id lists mixed in one request)."""
    if isinstance(value, str):
        return [value], False, True
    if not value:
        return [], False, False
    if isinstance(value[0], int):
        return [list(value)], True, True
    return list(value), all(isinstance(v, list) for v in value), False


def characters(value: Any) -> int:
    """TEI's x-compute-characters: characters of each text, ids of each id list."""
    items, _, _ = split_inputs(value)
    return sum(len(item) for item in items)


def check_not_empty(items: list[Any], field: str) -> None:
    """An empty text is a 400, as TEI's "`inputs` cannot be empty" (there is nothing to embed)."""
    for i, item in enumerate(items):
        if isinstance(item, str) and not item:
            name = f"{field}[{i}]" if len(items) > 1 else field
            raise ServeError(Kind.EMPTY, f"`{name}` cannot be empty: send some text", code="empty_input",
                             param=field)


@dataclass(frozen=True)
class Truncation:
    """Whether over-long inputs are cut, and if not, the refusal's reason and remedy."""

    cut: bool
    hint: str = TRUNCATE_HINT


WINDOW_IDS_HINT = "long_text='window' reads texts whole, not token ids: send the text, or fewer ids"


def truncation(service: Service, requested: bool | None, field: str | None = "truncate") -> Truncation:
    """The request's ``truncate`` (``field``; None: the route has none) or else --auto-truncate; the refusal
    names whichever of the two said no."""
    if requested is None and service.config.auto_truncate:
        return Truncation(True)
    remedy = f"send {field}=true, or shorten it" if field else "shorten it, or send long_text='truncate'"
    if requested is None:
        return Truncation(False, f"the server runs with --no-auto-truncate: {remedy}")
    if requested:
        return Truncation(True)
    return Truncation(False, f"this request sets {field}=false: {remedy}")


@dataclass(frozen=True)
class Prepared:
    """A request's inputs, tokenized: ids for the batcher, and the windows of texts read whole."""

    encoded: list[Encoded]
    texts: list[str]  # the texts as the model reads them (prompt prepended; "" for an id list; [] for ids only)
    whole: dict[int, Windows]  # inputs over the maximum with long_text='window', cut into windows
    prompt: str | None
    single: bool

    def usage(self) -> int:
        """Tokens as usage reports them: a text read whole counts every token once."""
        return sum(len(self.whole[i].doc.ids) if i in self.whole else len(e.ids) for i, e in enumerate(self.encoded))

    def work(self) -> int:
        """Tokens the model computes: a text read whole counts every window at full length."""
        return sum(sum(len(r) for r in self.whole[i].rows()) if i in self.whole else len(e.ids)
                   for i, e in enumerate(self.encoded))

    def output_rows(self) -> int:
        """Token vectors a per-token answer holds."""
        return self.usage()


def resolve_prompt(backend: bk.Backend, body: Any, are_ids: bool) -> str | None:
    """The runtime's rule (explicit prompt, else prompt_name, else the package default); none for ids."""
    if are_ids:
        if body.prompt is not None or body.prompt_name is not None:
            raise ServeError(Kind.VALIDATION, "prompt and prompt_name apply to text inputs, not token ids: send "
                             "text, or put the prompt's ids at the start of each row", code="invalid_value",
                             param="prompt" if body.prompt is not None else "prompt_name")
        return None
    try:
        backend.embedder.limits.check_prompt(body.prompt)
    except InputError as err:
        raise ServeError(Kind.PAYLOAD, str(err).replace("load with limits=TextLimits(prompt_chars=...)",
                         "put it in the texts"), code="prompt_too_long", param="prompt") from None
    try:
        check_text(body.prompt or "", "prompt")
        return runtime_prompt(backend.embedder.model, body.prompt_name, body.prompt)
    except InputError as err:  # an unknown name: the message lists the package's prompts
        raise ServeError(Kind.VALIDATION, str(err), code="invalid_value", param="prompt_name") from None


def check_positive_stride(body: Any) -> None:
    if body.window_stride is not None and body.window_stride < 1:
        raise ServeError(Kind.VALIDATION, f"window_stride must be a positive number of tokens, got "
                         f"{body.window_stride}", code="invalid_value", param="window_stride")


def plan_windows(service: Service, backend: bk.Backend, texts: list[str], encoded: list[Encoded],
                 stride: int | None, detail: bool) -> dict[int, Windows]:
    """The windows of each text over the maximum (the runtime's plan and limits), before any model work.

    The windows are counted from the token count alone, and the request refused (413) before its
    long texts become Python lists: a 2 MB text is half a million tokens."""
    long = [i for i, e in enumerate(encoded) if e.truncated]
    if not long:
        return {}
    text = backend.embedder.engine.text
    prefix, suffix = special_frame(text.tokenizer)
    room = text.max_length - prefix - suffix
    limits = backend.embedder.limits
    try:
        step = check_stride(stride, room, limits)
    except InputError as err:
        raise ServeError(Kind.VALIDATION, str(err), code="invalid_value", param="window_stride") from None
    most = min(limits.windows_per_text, service.config.max_request_tokens // text.max_length)
    backend.tokens.check_whole(
        [texts[i] for i in long], room + (most - 1) * step + prefix + suffix, "inputs",
        f"more than the {most} windows a request may run can read (window_stride {step}; --max-request-tokens "
        f"{service.config.max_request_tokens}): send it in parts, or use a larger window_stride")
    encodings = text.whole([texts[i] for i in long])
    starts = [window_starts(len(e) - prefix - suffix, room, step) for e in encodings]
    try:
        check_windows([len(s) for s in starts], limits)
    except InputError as err:  # the numbering is the long texts', not the request's
        raise ServeError(Kind.PAYLOAD, str(err).replace("text ", "a text ", 1), code="request_too_expensive",
                         param="inputs") from None
    short = sum(len(e.ids) for i, e in enumerate(encoded) if i not in set(long))
    service.check_cost(Cost(short + sum(len(s) for s in starts) * text.max_length, 0))
    return {i: Windows(from_whole(e, prefix, suffix, detail), room, s) for i, e, s in zip(long, encodings, starts)}


def prepare(service: Service, backend: bk.Backend, body: Any, value: Any, field: str, truncate: Truncation,
            direction: str = "right", detail: bool = False, limit: int | None = None) -> Prepared:
    """Tokenize one request (in a worker thread); an explicit long_text replaces the truncate rules. Texts and
    id lists may be mixed (each id list is taken as it is; the prompt applies to the texts)."""
    items, are_ids, single = split_inputs(value)
    service.check_count(items, field, limit)
    check_not_empty(items, field)
    check_positive_stride(body)
    id_at = [i for i, item in enumerate(items) if isinstance(item, list)]
    if id_at:
        resolve_prompt(backend, body, True)  # an explicit prompt beside token ids is refused
    window = body.long_text == "window"
    # ids are the model's input as given: over the maximum, window cannot re-read them
    ids_cut = False if window else truncate.cut or body.long_text == "truncate"
    ids_hint = WINDOW_IDS_HINT if window else truncate.hint
    if are_ids:
        return Prepared(backend.tokens.check_ids(items, field, ids_cut, hint=ids_hint), [], {}, None, single)
    text_at = [i for i, item in enumerate(items) if not isinstance(item, list)]
    at = text_at if id_at else None
    prompt = resolve_prompt(backend, body, False)
    cut = truncate.cut if body.long_text is None else True
    texts = with_prompt([items[i] for i in text_at], prompt)
    encoded = backend.tokens.encode(texts, field, cut, direction, at=at, hint=truncate.hint)
    if id_at:  # mixed: back in request order, "" standing for each id list's text
        ids = backend.tokens.check_ids([items[i] for i in id_at], field, ids_cut, at=id_at, hint=ids_hint)
        encoded, texts = _in_order(text_at, encoded, texts, id_at, ids)
    whole = plan_windows(service, backend, texts, encoded, body.window_stride, detail) if window else {}
    return Prepared(encoded, texts, whole, prompt, single)


def _in_order(text_at: list[int], encoded: list[Encoded], texts: list[str], id_at: list[int],
              ids: list[Encoded]) -> tuple[list[Encoded], list[str]]:
    slots: dict[int, tuple[Encoded, str]] = {i: (e, t) for i, e, t in zip(text_at, encoded, texts)}
    slots.update({i: (e, "") for i, e in zip(id_at, ids)})
    ordered = [slots[i] for i in range(len(slots))]
    return [e for e, _ in ordered], [t for _, t in ordered]


async def prepared(service: Service, backend: bk.Backend, body: Any, value: Any, field: str, truncate: Truncation,
                   direction: str = "right", limit: int | None = None) -> Prepared:
    return await asyncio.to_thread(prepare, service, backend, body, value, field, truncate, direction, False, limit)


def window_mode(backend: bk.Backend, output: str) -> str:
    """What each window of a long text returns: its owned rows, or its share of the pooled vector."""
    if output != SENTENCE:
        return "rows"
    pooling = str(backend.embedder.model.default_pooling)
    try:
        check_window_pooling(pooling)
    except InputError as err:
        raise ServeError(Kind.VALIDATION, str(err), code="invalid_value", param="long_text") from None
    return pooling


def queued(inputs: Prepared, output: str, mode: str) -> tuple[list[BatchKey], list[tuple[int, Any]]]:
    """One queue item per input within the maximum, one per window of a text read whole."""
    keys: list[BatchKey] = []
    payloads: list[tuple[int, Any]] = []
    for i, e in enumerate(inputs.encoded):
        if i not in inputs.whole:
            keys.append(output_key(output))
            payloads.append((len(e.ids), e.ids))
            continue
        windows = inputs.whole[i]
        for k, (row, span) in enumerate(zip(windows.rows(), windows.owned())):
            keys.append(WindowKey(mode))
            payloads.append((len(row), bk.WindowPayload(row, span, k == 0)))
    return keys, payloads


def joined(inputs: Prepared, results: list[Any], mode: str, pooled_output: str) -> list[Any]:
    """Per input: its result, or its windows' results joined (pooled, or the token rows in order)."""
    out: list[Any] = []
    at = 0
    for i in range(len(inputs.encoded)):
        if i not in inputs.whole:
            out.append(results[at])
            at += 1
            continue
        count = len(inputs.whole[i].starts)
        parts = results[at : at + count]
        at += count
        if mode == "rows":
            out.append(np.concatenate(parts))
        else:
            out.append(pooled_from_parts(parts, len(inputs.whole[i].doc.ids), pooled_output))
    return out


async def embed(service: Service, backend: bk.Backend, output: str, inputs: Prepared, body: Any,
                receive: Any) -> Answer:
    """Sentence or token vectors (unnormalized) in input order; whole texts counted at their full length."""
    mode = window_mode(backend, output) if inputs.whole else "rows"
    keys, payloads = queued(inputs, output, mode)
    answer = await service.compute(backend, output_key(output), payloads, receive, keys if inputs.whole else None,
                                   usage_tokens=inputs.usage())
    if inputs.whole:
        answer.results = joined(inputs, answer.results, mode, backend.pooled_output)
    return answer


def words_cost(backend: bk.Backend, inputs: Prepared) -> Cost:
    chars = sum(len(t) for t in inputs.texts)
    return Cost(inputs.work(), cost.vectors(inputs.output_rows(), backend.embedder.model.hidden_size)
                + 2 * chars)


async def embed_words(service: Service, backend: bk.Backend, body: Any, truncate: Truncation,
                      receive: Any) -> tuple[Answer, int]:
    """Word vectors: texts within the maximum (or truncated) through the runtime's output='word'; a text read
    whole through its windows, then its token rows pooled per word as the runtime does."""
    started = perf_counter()
    inputs = await asyncio.to_thread(prepare, service, backend, body, body.inputs, "inputs", truncate, "right", True)
    tokenizing = perf_counter() - started
    needed = words_cost(backend, inputs)
    service.check_cost(needed)
    keys: list[BatchKey] = []
    payloads: list[tuple[int, Any]] = []
    word_key = WordKey(body.normalize, inputs.prompt)
    items, _, _ = split_inputs(body.inputs)
    for i, e in enumerate(inputs.encoded):
        if i in inputs.whole:
            windows = inputs.whole[i]
            for k, (row, span) in enumerate(zip(windows.rows(), windows.owned())):
                keys.append(WindowKey("rows"))
                payloads.append((len(row), bk.WindowPayload(row, span, k == 0)))
        else:
            keys.append(word_key)
            payloads.append((len(e.ids), items[i]))
    answer = await service.compute(backend, word_key, payloads, receive, keys, usage_tokens=inputs.usage())
    answer.tokenization_seconds = tokenizing
    if inputs.whole:
        rows = joined(inputs, answer.results, "rows", backend.pooled_output)
        answer.results = [_words(inputs, i, r, body.normalize) if i in inputs.whole else r for i, r in enumerate(rows)]
    return answer, needed.response_bytes


def _words(inputs: Prepared, i: int, vectors: np.ndarray, normalize: bool) -> Any:
    """A whole text's word vectors, as Embedder.encode(output='word', long_text='window') makes them."""
    from dataclasses import replace

    record = word_embeddings(inputs.texts[i], inputs.whole[i].doc, vectors)
    return replace(record, embeddings=normalized(record.embeddings)) if normalize else record
