"""The OpenAI API: POST /v1/embeddings (and TEI's alias /embeddings), GET /v1/models.

As OpenAI's: up to 2,048 inputs per request (the queue still cuts them into token-budget batches, and
the request's cost is checked against --max-request-tokens / --max-response-bytes first), any ``model``
name accepted (an unknown one is answered by the first model, with one warning per name, unless
--strict-model-name), invalid requests answered 400 in OpenAI's error shape (serve/errors.py).
"""

from __future__ import annotations

import base64
from time import perf_counter
from typing import Any

import numpy as np
from fastapi import Request

from polyglot_onnx.serve import cost
from polyglot_onnx.serve.info import openai_models
from polyglot_onnx.serve.responses import answer as streamed
from polyglot_onnx.serve.route_table import json, route, service_of
from polyglot_onnx.serve.schemas import OpenAIEmbeddingRequest
from polyglot_onnx.serve.sentences import Ask, embed_sentences
from polyglot_onnx.serve.text_inputs import truncation

OPENAI_MAX_INPUTS = 2048  # OpenAI's limit of inputs per embeddings request


@route("/v1/embeddings")
async def openai_embeddings(body: OpenAIEmbeddingRequest, request: Request) -> Any:
    service = service_of(request)
    started = perf_counter()
    backend = service.model(body.model, any_name=True)
    ask = Ask(body.input, "input", truncation(service, None, field=None), limit=OPENAI_MAX_INPUTS)
    out = await embed_sentences(service, backend, body, ask, request.receive)
    vectors = out.vectors
    if body.encoding_format == "base64":  # little-endian float32, or the int8 / uint8 bytes as they are
        wire = "<f4" if vectors.dtype == np.float32 else vectors.dtype
        payload: list[Any] = [base64.b64encode(v.astype(wire).tobytes()).decode("ascii") for v in vectors]
    else:
        payload = list(vectors)  # rows rendered a few hundred at a time when the answer is large
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(payload)]
    usage = {"prompt_tokens": out.answer.tokens, "total_tokens": out.answer.tokens}
    content = {"object": "list", "data": data, "model": backend.name, "usage": usage}
    return streamed(content, out.headers(started), cost.vectors(*vectors.shape))


route("/embeddings")(openai_embeddings)  # TEI's alias, answered in OpenAI's shape


@route("/v1/models", "GET", inference=False)
async def models(request: Request) -> Any:
    return json(openai_models(service_of(request)))
