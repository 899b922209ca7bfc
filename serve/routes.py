"""HTTP routes: TEI's /embed /embed_all /tokenize /info /health /metrics; /fill-mask and /embed_words (ours).

TEI's aliases and tokenizer routes are in routes_tei, the OpenAI API in routes_openai; all register
on the one route table (route_table.py). Routes know HTTP and the request shapes; tokens and batching
live in the service and the queue. Imported only when serving, so fastapi is imported at module level.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from time import perf_counter
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from polyglot_onnx.errors import InputError
from polyglot_onnx.serve import backend as bk
from polyglot_onnx.serve import cost
from polyglot_onnx.serve.errors import Kind, ServeError
from polyglot_onnx.serve.info import service_info
from polyglot_onnx.serve.keys import TOKEN, FillMaskKey
from polyglot_onnx.serve.responses import answer as streamed
from polyglot_onnx.serve.route_table import ROUTE_TABLE, json, route, router
from polyglot_onnx.serve.route_table import service_of as _service
from polyglot_onnx.serve.schemas import EmbedRequest, FillMaskRequest, TokenizeRequest, WordsRequest
from polyglot_onnx.serve.sentences import Ask, embed_sentences
from polyglot_onnx.serve.text_inputs import (
    characters,
    check_not_empty,
    prepared,
    resolve_prompt,
    split_inputs,
    truncation,
)
from polyglot_onnx.serve.text_inputs import embed as embed_inputs
from polyglot_onnx.serve.text_inputs import embed_words as embed_word_inputs
from polyglot_onnx.serve.tokens import check_text

__all__ = ["ROUTE_TABLE", "router"]


def refuse_sentence_options(body: Any) -> None:
    """/embed_all shares /embed's body; options that shape sentence vectors must not be silently ignored there.

    Per-token vectors are TEI's raw last hidden states: never quantized, cut or normalized - answering float,
    full-width vectors to an int8 / Matryoshka / normalize ask would be silent wrong output.
    """
    asked = [name for name, given in (("precision", body.precision != "float32"), ("ranges", body.ranges is not None),
                                      ("dimensions", body.dimensions is not None),
                                      ("normalize", "normalize" in body.model_fields_set and body.normalize)) if given]
    if asked:
        verb = "applies" if len(asked) == 1 else "apply"
        raise ServeError(Kind.VALIDATION, f"{' and '.join(asked)} {verb} to sentence vectors (/embed); /embed_all "
                         "answers raw per-token vectors: drop them here", code="invalid_value", param=asked[0])


@route("/embed")
async def tei_embed(body: EmbedRequest, request: Request) -> Any:
    """TEI's /embed (and its aliases / and /invocations): a list of vectors."""
    service = _service(request)
    started = perf_counter()
    backend = service.model(body.model)
    ask = Ask(body.inputs, "inputs", truncation(service, body.truncate), body.normalize,
              body.truncation_direction.lower())
    out = await embed_sentences(service, backend, body, ask, request.receive)
    return json(out.vectors.tolist(), out.headers(started))


@route("/embed_all")
async def embed_all(body: EmbedRequest, request: Request) -> Any:
    service = _service(request)
    started = perf_counter()
    backend = service.model(body.model)
    refuse_sentence_options(body)
    inputs = await prepared(service, backend, body, body.inputs, "inputs", truncation(service, body.truncate),
                            body.truncation_direction.lower())
    tokenizing = perf_counter() - started
    hidden = backend.embedder.model.hidden_size
    needed = cost.Cost(inputs.work(), cost.vectors(inputs.output_rows(), hidden))
    service.check_cost(needed)
    answer = await embed_inputs(service, backend, TOKEN, inputs, body, request.receive)
    answer.tokenization_seconds, answer.characters = tokenizing, characters(body.inputs)
    # As TEI: the last hidden states, not normalized.
    return streamed(answer.results, answer.headers(started), needed.response_bytes)


@route("/tokenize")
async def tokenize(body: TokenizeRequest, request: Request) -> Any:
    """TEI's /tokenize: per input its tokens, with the prompt the embedding routes would prepend (TEI's
    prompt_name; our prompt), so the tokens are the ones the model reads."""
    service = _service(request)
    backend = service.model(body.model)
    texts, _, _ = split_inputs(body.inputs)
    service.check_count(texts, "inputs")
    check_not_empty(texts, "inputs")
    prompt = resolve_prompt(backend, body, False) or ""
    tokens, size = await asyncio.to_thread(backend.tokens.detail, [prompt + t for t in texts], "inputs",
                                           body.add_special_tokens, service.config.max_request_tokens,
                                           service.config.max_response_bytes)
    return streamed(tokens, None, size)


@route("/fill-mask")
async def fill_mask(body: FillMaskRequest, request: Request) -> Any:
    service = _service(request)
    started = perf_counter()
    backend = service.model(body.model)
    fm = _fill_mask(backend)
    limits = backend.fill_mask_limits
    if not 1 <= body.top_k <= limits.top_k:
        raise ServeError(Kind.VALIDATION, f"top_k must be between 1 and {limits.top_k}, got {body.top_k}",
                         param="top_k")
    words = _targets(body.targets)
    texts, _, single = split_inputs(body.inputs)
    service.check_count(texts, "inputs")
    # The runtime reads an over-long text whole (a window around each mask), so nothing is truncated here.
    plan = await asyncio.to_thread(_mask_plan, backend, texts, body.top_k, service.config.max_request_tokens)
    targets = await asyncio.to_thread(_target_ids, backend, words)
    tokenizing = perf_counter() - started
    needed = _fill_mask_cost(texts, plan, body.top_k)
    service.check_cost(needed)
    key = FillMaskKey(body.top_k, targets)
    payloads = [(len(ids), (ids, positions)) for ids, positions, _ in plan.rows]
    answer = await service.compute(backend, key, payloads, request.receive)
    answer.tokenization_seconds, answer.characters = tokenizing, characters(texts)
    results = await asyncio.to_thread(fm.answer, plan, answer.results)
    return streamed(results[0] if single else results, answer.headers(started), needed.response_bytes)


@route("/embed_words")
async def embed_words(body: WordsRequest, request: Request) -> Any:
    service = _service(request)
    started = perf_counter()
    backend = service.model(body.model)
    answer, size = await embed_word_inputs(service, backend, body, truncation(service, body.truncate),
                                           request.receive)
    answer.characters = characters(body.inputs)
    out = [{"words": r.words, "offsets": [list(o) for o in r.offsets], "embeddings": r.embeddings}
           for r in answer.results]
    return streamed(out, answer.headers(started), size)


@route("/health", "GET", inference=False, public=True)
async def health(request: Request) -> Any:
    service = _service(request)
    ready = service.state == "ready"
    return JSONResponse({"status": service.state}, status_code=200 if ready else 503)


@route("/info", "GET", inference=False)
async def info(request: Request) -> Any:
    service = _service(request)
    return json(service_info(service))


@route("/metrics", "GET", inference=False)
async def metrics(request: Request) -> Any:
    service = _service(request)
    content, media = service.metrics.render()
    return Response(content, media_type=media)


def _fill_mask(backend: bk.Backend) -> Any:
    if backend.fill_mask is None:
        raise ServeError(Kind.VALIDATION, f"model {backend.name!r} has no masked-LM head (an embedding-only "
                         "package): use /embed, or serve a package exported with its head", param="model")
    return backend.fill_mask


def _mask_plan(backend: bk.Backend, texts: list[str], top_k: int, cap: int) -> Any:
    """The runtime's FillMask.plan (rows, limits), its refusals worded for a request."""
    fm = _fill_mask(backend)
    for i, text in enumerate(texts):
        check_text(text, f"inputs[{i}]" if len(texts) > 1 else "inputs")
    backend.tokens.check_whole(texts, cap, "inputs", "over the limit a request may hold (--max-request-tokens): "
                               "send the part around the masks")
    encodings = fm.encode(texts)
    counts = [_mask_count(backend, e.ids, i) for i, e in enumerate(encodings)]
    limits = backend.fill_mask_limits
    if sum(counts) > limits.masks_per_call:
        raise ServeError(Kind.VALIDATION, f"the inputs hold {sum(counts)} {fm.mask_token} tokens, over the limit of "
                         f"{limits.masks_per_call} per request: split the request", param="inputs")
    try:
        return fm.plan(texts, top_k, encodings=encodings)
    except InputError as err:  # the answer would be too large (FillMaskLimits.sequence_chars)
        raise ServeError(Kind.PAYLOAD, str(err), code="response_too_large", param="inputs") from None


def _mask_count(backend: bk.Backend, ids: Sequence[int], index: int) -> int:
    """Masks in one input: at least one, at most the runtime's per-text limit."""
    mask = _fill_mask(backend)
    count = sum(1 for t in ids if t == mask.mask_id)
    if not count:
        raise ServeError(Kind.VALIDATION, f"inputs[{index}] has no {mask.mask_token} token: put "
                         f"{mask.mask_token} where the word to predict goes", param="inputs")
    limit = backend.fill_mask_limits.masks_per_text
    if count > limit:
        raise ServeError(Kind.VALIDATION, f"inputs[{index}] has {count} {mask.mask_token} tokens, over the limit of "
                         f"{limit} per text: split it", param="inputs")
    return count


def _target_ids(backend: bk.Backend, words: tuple[str, ...] | None) -> tuple[int, ...] | None:
    if words is None:
        return None
    try:
        return tuple(int(t) for t in _fill_mask(backend).target_ids(list(words)))
    except InputError as err:
        raise ServeError(Kind.VALIDATION, str(err), param="targets") from None


def _fill_mask_cost(texts: list[str], plan: Any, top_k: int) -> cost.Cost:
    """Every row's tokens; per prediction its fixed fields plus its sequence (the row's share of its text)."""
    tokens = sum(len(ids) for ids, _, _ in plan.rows)
    size = 0
    for ids, positions, slots in plan.rows:
        i = slots[0][0]
        chars = len(texts[i]) * len(ids) // max(len(plan.encodings[i].ids), 1)
        size += len(positions) * top_k * (cost.BYTES_PER_PREDICTION + chars)
    return cost.Cost(tokens, size)


def _targets(value: str | list[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    words = [value] if isinstance(value, str) else list(value)
    if not words:
        raise ServeError(Kind.EMPTY, "targets is an empty list: leave it out, or name at least one word", param="targets")
    for i, word in enumerate(words):
        check_text(word, f"targets[{i}]")
    return tuple(words)
