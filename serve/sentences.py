"""Sentence vectors for a request: the one path every embedding route takes (TEI's /embed, / and
/invocations, /similarity; OpenAI's /v1/embeddings and /embeddings).

Check the options, tokenize (off the loop), check the request's cost, queue, then cut (Matryoshka),
normalize and quantize as Embedder.encode does; the timing headers and TEI's request metrics are
filled in here, so the routes only shape their answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import numpy as np

from polyglot_onnx.errors import InputError
from polyglot_onnx.runtime import sentence_options
from polyglot_onnx.runtime.sentence_options import normalized
from polyglot_onnx.serve import backend as bk
from polyglot_onnx.serve import cost
from polyglot_onnx.serve.errors import Kind, ServeError
from polyglot_onnx.serve.keys import SENTENCE
from polyglot_onnx.serve.service import Answer, ClientGone, Service
from polyglot_onnx.serve.text_inputs import Prepared, Truncation, characters, prepared
from polyglot_onnx.serve.text_inputs import embed as embed_inputs


def check_dimensions(dimensions: int | None, hidden: int, field: str = "dimensions") -> int:
    if dimensions is None:
        return hidden
    if not 1 <= dimensions <= hidden:
        raise ServeError(
            Kind.VALIDATION, f"{field} must be between 1 and the model's {hidden}, got {dimensions}",
            code="invalid_value", param=field,
        )
    return dimensions


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


@dataclass(frozen=True)
class Sentences:
    vectors: np.ndarray  # cut, normalized (when asked) and quantized, in input order
    answer: Answer
    single: bool  # the request sent one input, not a list

    def headers(self, started: float) -> dict[str, str]:
        return self.answer.headers(started)


@dataclass(frozen=True)
class Ask:
    """What a route asks of its inputs: where they are in the body, the truncation, the output options."""

    value: Any
    field: str
    truncate: Truncation
    normalize: bool = True
    direction: str = "right"
    limit: int | None = None  # inputs per request (None: --max-client-batch-size)


async def embed_sentences(service: Service, backend: bk.Backend, body: Any, ask: Ask, receive: Any) -> Sentences:
    """One request's sentence vectors, counted in TEI's request metrics (te_request_*) either way."""
    started = perf_counter()
    counters = service.metrics.tei.counters
    single = isinstance(ask.value, str) or bool(ask.value) and isinstance(ask.value[0], int)
    counters.inc("te_request_count", "single" if single else "batch")
    try:
        dims = check_dimensions(body.dimensions, backend.dimension)
        ranges = check_precision(body, dims)
        inputs = await prepared(service, backend, body, ask.value, ask.field, ask.truncate, ask.direction, ask.limit)
        counters.inc("te_embed_count", amount=len(inputs.encoded))
        tokenizing = perf_counter() - started
        service.check_cost(sentence_cost(inputs, dims), ask.field)
        answer = await embed_inputs(service, backend, SENTENCE, inputs, body, receive)
        vectors = quantized(sentence_vectors(answer.results, dims, ask.normalize), body, ranges)
    except ServeError as err:
        counters.inc("te_request_failure", failure(err))
        raise
    except (ClientGone, asyncio.CancelledError):
        counters.inc("te_request_failure", "dropped")
        raise
    answer.tokenization_seconds = tokenizing
    answer.characters = characters(ask.value)
    lengths = [len(e.ids) for e in inputs.encoded]
    service.metrics.tei.observe((perf_counter() - started, tokenizing, answer.queue_seconds, answer.inference_seconds),
                                lengths, single)
    return Sentences(vectors, answer, inputs.single)


def failure(err: ServeError) -> str:
    """TEI's te_request_failure reasons."""
    if err.code == "batch_too_large":
        return "batch_size"
    return {Kind.BACKEND: "inference", Kind.OVERLOADED: "overloaded"}.get(err.kind, "validation")
