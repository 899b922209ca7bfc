"""TEI's other routes: its aliases (POST / and /invocations embed, GET / and /ping answer health, as TEI's
router does for an embedding model), /decode, /similarity, and the schema at TEI's address.

Registered on the one route table (route_table.py) when serve/app.py imports this module.
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import Any, cast

from fastapi import Request

from polyglot_onnx.runtime import st_compat
from polyglot_onnx.serve.errors import Kind, ServeError
from polyglot_onnx.serve.route_table import json, route, service_of
from polyglot_onnx.serve.routes import health, tei_embed
from polyglot_onnx.serve.schemas import DecodeRequest, EmbedRequest, SimilarityParameters, SimilarityRequest
from polyglot_onnx.serve.sentences import Ask, embed_sentences
from polyglot_onnx.serve.text_inputs import truncation

# POST / is what huggingface_hub's InferenceClient(base_url=...) posts to; /invocations is SageMaker's
route("/", "POST")(tei_embed)
route("/invocations", "POST")(tei_embed)
route("/", "GET", inference=False, public=True)(health)
route("/ping", "GET", inference=False, public=True)(health)  # SageMaker's health check


@route("/decode")
async def decode(body: DecodeRequest, request: Request) -> Any:
    """Ids back to text: always a list of strings, one per list of ids (as TEI)."""
    service = service_of(request)
    backend = service.model(body.model)
    nested = bool(body.ids) and isinstance(body.ids[0], list)
    rows = cast(list[list[int]], body.ids) if nested else [cast(list[int], body.ids)]
    service.check_count(rows, "ids")
    texts = await asyncio.to_thread(backend.tokens.decode, rows, "ids", body.skip_special_tokens)
    return json(texts)


@route("/similarity")
async def similarity(body: SimilarityRequest, request: Request) -> Any:
    """TEI's sentence similarity: the source and the sentences embedded as one /embed request (unnormalized,
    as TEI), then the cosine of each sentence to the source."""
    service = service_of(request)
    started = perf_counter()
    backend = service.model(body.model)
    sentences = body.inputs.sentences
    if not sentences:
        raise ServeError(Kind.EMPTY, "`inputs.sentences` cannot be empty: send at least one sentence to compare",
                         code="empty_input", param="inputs.sentences")
    params = body.parameters or SimilarityParameters()
    inputs = [body.inputs.source_sentence, *sentences]
    embed = EmbedRequest(inputs=inputs, normalize=False, truncate=params.truncate, prompt_name=params.prompt_name,
                         truncation_direction=params.truncation_direction)
    ask = Ask(inputs, "inputs", truncation(service, params.truncate), False, params.truncation_direction.lower())
    out = await embed_sentences(service, backend, embed, ask, request.receive)
    scores = st_compat.similarity(out.vectors[1:], out.vectors[:1], "cosine")[:, 0]
    return json([float(s) for s in scores], out.headers(started))


@route("/api-doc/openapi.json", "GET", inference=False, public=True)
async def tei_openapi(request: Request) -> Any:
    """The OpenAPI schema where TEI serves it (ours is also at /openapi.json, read by /docs)."""
    return json(request.app.openapi())
