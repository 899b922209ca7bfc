"""What /info and /v1/models say about the server: TEI's and OpenAI's fields, then ours."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from polyglot_onnx.serve.backend import Backend
from polyglot_onnx.serve.service import Service

# A variant's name -> the dtype TEI's model_dtype names ("float16"); a name not listed is given as it is
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "int8"}
OWNED_BY = "polyglot-onnx"


def model_dtype(variant: str) -> str:
    return DTYPES.get(variant, DTYPES.get(variant.split("-")[0], variant))


def service_info(service: Service) -> dict[str, Any]:
    """TEI's /info keys (for the first model) plus every model's variant, provider and drift evidence."""
    import onnxruntime
    import tokenizers

    from polyglot_onnx import __version__

    cfg = service.config
    models = [b.info() for b in service.backends.values()]
    first = models[0] if models else {}
    return {
        "model_id": first.get("source"),
        "model_sha": None,
        "model_dtype": model_dtype(str(first.get("variant", ""))),
        "served_model_name": first.get("name"),
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
        "sha": None,
        "docker_label": None,
        # ours: the variant the vectors come from (also the x-polyglot-variant header of every answer)
        "variant": first.get("variant"),
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
            "strict_model_name": cfg.strict_model_name,
        },
        "versions": {"polyglot_onnx": __version__, "onnxruntime": onnxruntime.__version__,
                     "tokenizers": tokenizers.__version__},
    }


def openai_models(service: Service) -> dict[str, Any]:
    """OpenAI's model list: each served name, created when its package was exported."""
    return {"object": "list", "data": [openai_model(b) for b in service.backends.values()]}


def openai_model(backend: Backend) -> dict[str, Any]:
    return {"id": backend.name, "object": "model", "created": created(backend), "owned_by": OWNED_BY}


def created(backend: Backend) -> int:
    """The package's export time in Unix seconds (0 when its manifest's date cannot be read)."""
    stamp = str(getattr(backend.embedder.engine.manifest, "created", ""))
    try:
        return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0
