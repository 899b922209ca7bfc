"""HTTP routes: OpenAI /v1/embeddings; TEI's /embed /embed_all /tokenize /info; /fill-mask, /embed_words.

Routes know HTTP and the request shapes; tokens and batching live in the service and the queue.
Imported only when serving, so fastapi is imported at module level here.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Callable, TypeVar

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from polyglot_onnx.errors import InputError
from polyglot_onnx.runtime import sentence_options
from polyglot_onnx.serve import backend as bk
from polyglot_onnx.serve import cost
from polyglot_onnx.serve.errors import Kind, ServeError
from polyglot_onnx.serve.keys import SENTENCE, TOKEN, FillMaskKey
from polyglot_onnx.serve.responses import answer as streamed
from polyglot_onnx.serve.schemas import (
    EmbedRequest,
    FillMaskRequest,
    OpenAIEmbeddingRequest,
    TokenizeRequest,
    WordsRequest,
)
from polyglot_onnx.serve.service import Service
from polyglot_onnx.serve.text_inputs import Prepared, prepared, split_inputs
from polyglot_onnx.serve.text_inputs import embed as embed_inputs
from polyglot_onnx.serve.text_inputs import embed_words as embed_word_inputs
from polyglot_onnx.serve.tokens import check_text


def normalized(x: np.ndarray) -> np.ndarray:
    """The runtime's normalisation, row by row, so served vectors equal Embedder.encode's."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    out: np.ndarray = x / np.maximum(norm, 1e-12)
    return out


def check_dimensions(dimensions: int | None, hidden: int, field: str = "dimensions") -> int:
    if dimensions is None:
        return hidden
    if not 1 <= dimensions <= hidden:
        raise ServeError(
            Kind.VALIDATION, f"{field} must be between 1 and the model's {hidden}, got {dimensions}",
            code="invalid_value", param=field,
        )
    return dimensions


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


def sentence_vectors(rows: Sequence[np.ndarray], dimensions: int, normalize: bool) -> np.ndarray:
    """Matryoshka: keep the first ``dimensions``, then normalize (when asked)."""
    out = np.stack(rows)[:, :dimensions]
    return normalized(out) if normalize else out


def check_precision(body: Any, width: int) -> np.ndarray | None:
    """The request's ranges as an array, checked before any model work; a bad pair is a 422."""
    ranges = None
    if body.ranges is not None:
        if len(body.ranges) != 2 or len(body.ranges[0]) != len(body.ranges[1]):
            raise ServeError(Kind.VALIDATION, f"ranges must be [[{width} mins], [{width} maxs]]", code="invalid_value",
                             param="ranges")
        ranges = finite_ranges(body.ranges)
    try:
        sentence_options.check_precision(body.precision, ranges, width)
    except InputError as err:
        raise ServeError(Kind.VALIDATION, str(err), code="invalid_value", param="ranges") from None
    return ranges


def finite_ranges(values: list[list[float | int]]) -> np.ndarray:
    """float32 ranges, or a 422: a huge integer, NaN or Infinity would quantize every value to one bucket."""
    with np.errstate(over="ignore"):
        try:
            ranges = np.asarray(values, dtype=np.float64).astype(np.float32)
        except OverflowError:  # an integer with hundreds of digits
            ranges = np.full((2, 1), np.inf, dtype=np.float32)
    if not np.isfinite(ranges).all():
        raise ServeError(Kind.VALIDATION, "ranges must hold finite numbers within float32 (no NaN, Infinity or "
                         "numbers beyond 3.4e38): send the per-dimension mins and maxs of real embeddings",
                         code="invalid_value", param="ranges")
    return ranges


def sentence_cost(inputs: Prepared, dimensions: int) -> cost.Cost:
    return cost.Cost(inputs.work(), cost.vectors(len(inputs.encoded), dimensions))


def quantized(vectors: np.ndarray, body: Any, ranges: np.ndarray | None) -> np.ndarray:
    """sentence-transformers' quantize_embeddings, as Embedder.encode(precision=...) applies it."""
    if body.precision == "float32":
        return vectors
    try:
        return sentence_options.quantize(vectors, body.precision, ranges)
    except InputError as err:  # int8 of a single vector without ranges
        raise ServeError(Kind.VALIDATION, str(err), code="invalid_value", param="ranges") from None


F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class RouteInfo:
    """What the app's guard and metrics need to know about a route: its path is its metrics label, ``inference``
    routes run the model (the overload guard counts them), ``public`` routes need no API key."""

    path: str
    method: str
    inference: bool
    public: bool = False


router = APIRouter()
ROUTE_TABLE: dict[str, RouteInfo] = {}  # filled by @route below: the one list of the server's routes


def route(path: str, method: str = "POST", inference: bool = True, public: bool = False) -> Callable[[F], F]:
    """Register a handler on the module's router and its metadata in ROUTE_TABLE, in one place."""

    def register(handler: F) -> F:
        ROUTE_TABLE[path] = RouteInfo(path, method, inference, public)
        router.add_api_route(path, handler, methods=[method])
        return handler

    return register


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def json(content: Any, headers: dict[str, str] | None = None) -> Any:
    return JSONResponse(content, headers=headers)


def truncate_flag(service: Service, value: bool | None) -> bool:
    return service.config.auto_truncate if value is None else value


@route("/v1/embeddings")
async def openai_embeddings(body: OpenAIEmbeddingRequest, request: Request) -> Any:
    service = _service(request)
    started = perf_counter()
    backend = service.model(body.model)
    dims = check_dimensions(body.dimensions, backend.dimension)
    ranges = check_precision(body, dims)
    inputs = await prepared(service, backend, body, body.input, "input", service.config.auto_truncate)
    service.check_cost(sentence_cost(inputs, dims), "input")
    answer = await embed_inputs(service, backend, SENTENCE, inputs, body, request.receive)
    vectors = quantized(sentence_vectors(answer.results, dims, normalize=True), body, ranges)
    if body.encoding_format == "base64":  # little-endian float32, or the int8 / uint8 bytes as they are
        wire = "<f4" if vectors.dtype == np.float32 else vectors.dtype
        payload: list[Any] = [base64.b64encode(v.astype(wire).tobytes()).decode("ascii") for v in vectors]
    else:
        payload = vectors.tolist()
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(payload)]
    usage = {"prompt_tokens": answer.tokens, "total_tokens": answer.tokens}
    return json({"object": "list", "data": data, "model": backend.name, "usage": usage}, answer.headers(started))


@route("/embed")
async def embed(body: EmbedRequest, request: Request) -> Any:
    service = _service(request)
    started = perf_counter()
    backend = service.model(body.model)
    dims = check_dimensions(body.dimensions, backend.dimension)
    ranges = check_precision(body, dims)
    inputs = await prepared(service, backend, body, body.inputs, "inputs", truncate_flag(service, body.truncate),
                            body.truncation_direction.lower())
    service.check_cost(sentence_cost(inputs, dims))
    answer = await embed_inputs(service, backend, SENTENCE, inputs, body, request.receive)
    vectors = quantized(sentence_vectors(answer.results, dims, body.normalize), body, ranges)
    return json(vectors.tolist(), answer.headers(started))


@route("/embed_all")
async def embed_all(body: EmbedRequest, request: Request) -> Any:
    service = _service(request)
    started = perf_counter()
    backend = service.model(body.model)
    refuse_sentence_options(body)
    inputs = await prepared(service, backend, body, body.inputs, "inputs", truncate_flag(service, body.truncate),
                            body.truncation_direction.lower())
    hidden = backend.embedder.model.hidden_size
    needed = cost.Cost(inputs.work(), cost.vectors(inputs.output_rows(), hidden))
    service.check_cost(needed)
    answer = await embed_inputs(service, backend, TOKEN, inputs, body, request.receive)
    # As TEI: the last hidden states, not normalized.
    return streamed(answer.results, answer.headers(started), needed.response_bytes)


@route("/tokenize")
async def tokenize(body: TokenizeRequest, request: Request) -> Any:
    service = _service(request)
    backend = service.model(body.model)
    texts, _, _ = split_inputs(body.inputs)
    service.check_count(texts, "inputs")
    tokens, size = await asyncio.to_thread(backend.tokens.detail, texts, "inputs", body.add_special_tokens,
                                           service.config.max_request_tokens, service.config.max_response_bytes)
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
    needed = _fill_mask_cost(texts, plan, body.top_k)
    service.check_cost(needed)
    key = FillMaskKey(body.top_k, targets)
    payloads = [(len(ids), (ids, positions)) for ids, positions, _ in plan.rows]
    answer = await service.compute(backend, key, payloads, request.receive)
    results = await asyncio.to_thread(fm.answer, plan, answer.results)
    return streamed(results[0] if single else results, answer.headers(started), needed.response_bytes)


@route("/embed_words")
async def embed_words(body: WordsRequest, request: Request) -> Any:
    service = _service(request)
    started = perf_counter()
    backend = service.model(body.model)
    answer, size = await embed_word_inputs(service, backend, body, truncate_flag(service, body.truncate),
                                           request.receive)
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


def service_info(service: Service) -> dict[str, Any]:
    """TEI's /info keys (for the first model) plus every model's variant, provider and drift evidence."""
    import onnxruntime
    import tokenizers

    from polyglot_onnx import __version__

    cfg = service.config
    models = [b.info() for b in service.backends.values()]
    first = models[0] if models else {}
    return {
        "model_id": first.get("name"),
        "model_dtype": first.get("variant"),
        "model_type": {"embedding": {"pooling": first.get("pooling")}},
        "max_concurrent_requests": cfg.max_concurrent_requests,
        "max_input_length": first.get("max_input_length"),
        "max_batch_tokens": cfg.max_batch_tokens,
        "max_batch_requests": cfg.max_batch_rows,
        "max_client_batch_size": cfg.max_client_batch_size,
        "auto_truncate": cfg.auto_truncate,
        # requests tokenize in asyncio's default thread pool (serve/text_inputs.py): its size
        "tokenization_workers": min(32, (os.cpu_count() or 1) + 4),
        "version": __version__,
        "state": service.state,
        "models": models,
        "limits": {
            "max_batch_tokens": cfg.max_batch_tokens,
            "max_client_batch_size": cfg.max_client_batch_size,
            "max_concurrent_requests": cfg.max_concurrent_requests,
            "payload_limit": cfg.payload_limit,
            "auto_truncate": cfg.auto_truncate,
            "api_key": cfg.api_key is not None,
            "max_request_tokens": cfg.max_request_tokens,
            "max_response_bytes": cfg.max_response_bytes,
            "max_batch_ms": cfg.max_batch_ms,
            "header_timeout": cfg.header_timeout,
            "body_timeout": cfg.body_timeout,
            "max_connections_per_address": cfg.max_connections_per_address,
            "drain_timeout": cfg.drain_timeout,
        },
        "versions": {"polyglot_onnx": __version__, "onnxruntime": onnxruntime.__version__,
                     "tokenizers": tokenizers.__version__},
    }
