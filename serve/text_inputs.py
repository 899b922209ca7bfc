"""Embedding requests' inputs: prompts, long texts read whole, and tokenization off the event loop.

Semantics are Embedder.encode's (runtime/sentence_options.py, runtime/long_text.py): a prompt is
prepended to each text and pooled with it, so its tokens count in usage and in the token budget;
with ``long_text='window'`` a text over the model maximum is embedded whole as overlapping windows.
Inputs within the maximum go to the batcher as token ids; whole texts go through the same queue
(same worker thread, same disconnect drop) under their own key, where the runtime reads them.
Tokenizing runs in a thread (``asyncio.to_thread``), so a large request does not hold up the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from polyglot_onnx.errors import InputError
from polyglot_onnx.runtime.sentence_options import resolve_prompt as runtime_prompt
from polyglot_onnx.runtime.sentence_options import with_prompt
from polyglot_onnx.serve import backend as bk
from polyglot_onnx.serve.errors import Kind, ServeError
from polyglot_onnx.serve.service import Answer, Service
from polyglot_onnx.serve.tokens import Encoded


def split_inputs(value: Any) -> tuple[list[Any], bool, bool]:
    """(items, are token ids, was a single input) for str | list[str] | list[int] | list[list[int]]."""
    if isinstance(value, str):
        return [value], False, True
    if not value:
        return [], False, False
    if isinstance(value[0], int):
        return [list(value)], True, True
    return list(value), isinstance(value[0], list), False


@dataclass(frozen=True)
class Prepared:
    """A request's inputs, tokenized: ids for the batcher, and which texts are read whole."""

    encoded: list[Encoded]
    texts: list[str]  # the texts as sent, without the prompt ([] for token-id inputs)
    whole: frozenset[int]  # indices over the maximum with long_text='window'
    prompt: str | None
    single: bool


def resolve_prompt(backend: bk.Backend, body: Any, are_ids: bool) -> str | None:
    """The runtime's rule (explicit prompt, else prompt_name, else the package default); none for ids."""
    if are_ids:
        if body.prompt is not None or body.prompt_name is not None:
            raise ServeError(Kind.VALIDATION, "prompt and prompt_name apply to text inputs, not token ids: send "
                             "text, or put the prompt's ids at the start of each row", code="invalid_value",
                             param="prompt" if body.prompt is not None else "prompt_name")
        return None
    try:
        return runtime_prompt(backend.embedder.engine.manifest.model, body.prompt_name, body.prompt)
    except InputError as err:  # an unknown name: the message lists the package's prompts
        raise ServeError(Kind.VALIDATION, str(err), code="invalid_value", param="prompt_name") from None


def check_stride(body: Any) -> None:
    if body.window_stride is not None and body.window_stride < 1:
        raise ServeError(Kind.VALIDATION, f"window_stride must be a positive number of tokens, got "
                         f"{body.window_stride}", code="invalid_value", param="window_stride")


def prepare(service: Service, backend: bk.Backend, body: Any, value: Any, field: str, truncate: bool,
            direction: str = "right") -> Prepared:
    """Tokenize one request (in a worker thread); an explicit long_text replaces the truncate rules."""
    items, are_ids, single = split_inputs(value)
    service.check_count(items, field)
    check_stride(body)
    prompt = resolve_prompt(backend, body, are_ids)
    window = body.long_text == "window"
    if are_ids:  # ids are the model's input as given: over the maximum, window cannot re-read them
        cut = False if window else truncate or body.long_text == "truncate"
        return Prepared(backend.tokens.check_ids(items, field, cut), [], frozenset(), None, single)
    cut = truncate if body.long_text is None else True
    encoded = backend.tokens.encode(with_prompt(items, prompt), field, cut, direction)
    whole = frozenset(i for i, e in enumerate(encoded) if window and e.truncated)
    return Prepared(encoded, items, whole, prompt, single)


async def prepared(service: Service, backend: bk.Backend, body: Any, value: Any, field: str, truncate: bool,
                   direction: str = "right") -> Prepared:
    return await asyncio.to_thread(prepare, service, backend, body, value, field, truncate, direction)


async def embed(service: Service, backend: bk.Backend, output: str, inputs: Prepared, body: Any,
                receive: Any) -> Answer:
    """Sentence or token vectors (unnormalized) in input order; whole texts counted at their full length."""
    key: Hashable = (output,)
    whole_key: Hashable = (bk.WHOLE, output, inputs.prompt, body.window_stride)
    keys = [whole_key if i in inputs.whole else key for i in range(len(inputs.encoded))]
    payloads = [(e.length, inputs.texts[i]) if i in inputs.whole else (len(e.ids), e.ids)
                for i, e in enumerate(inputs.encoded)]
    return await service.compute(backend, key, payloads, receive, keys if inputs.whole else None)


def prepare_words(service: Service, backend: bk.Backend, body: Any, truncate: bool) -> tuple[Hashable, list[Any]]:
    """The word route's queue key and (length, text) payloads: Embedder.encode(output='word') reads them."""
    texts, _, _ = split_inputs(body.inputs)
    service.check_count(texts, "inputs")
    check_stride(body)
    prompt = resolve_prompt(backend, body, False)
    window = body.long_text == "window"
    cut = truncate if body.long_text is None else True
    encoded = backend.tokens.encode(with_prompt(texts, prompt), "inputs", cut)
    key = (bk.WORD, body.normalize, prompt, "window" if window else "truncate", body.window_stride if window else None)
    return key, [(e.length if window else len(e.ids), t) for e, t in zip(encoded, texts)]
