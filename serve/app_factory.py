"""Import strings for ASGI servers that build the app themselves (uvicorn --workers, gunicorn).

``uvicorn --factory polyglot_onnx.serve.app_factory:app_from_env`` with POLYGLOT_SERVE_CONFIG set to
a ServeConfig JSON (``polyglot-onnx serve --workers N`` sets it) and POLYGLOT_API_KEY for the key.
"""

from __future__ import annotations

import os
from typing import Any

from polyglot_onnx.errors import InputError
from polyglot_onnx.serve.config import CONFIG_ENV, ServeConfig


def app_from_env() -> Any:
    from polyglot_onnx.serve.app import create_app

    text = os.environ.get(CONFIG_ENV)
    if not text:
        raise InputError(f"{CONFIG_ENV} is not set: use 'polyglot-onnx serve', or set it to a ServeConfig JSON")
    return create_app(ServeConfig.from_json(text))
