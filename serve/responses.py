"""JSON answers: small ones whole, large ones streamed in chunks written off the event loop.

A per-token answer (/embed_all, /embed_words, /tokenize, a long /fill-mask) can be tens of megabytes;
rendered whole, ``json.dumps`` holds the interpreter for seconds (every other client waits) and the
text, its bytes and the Python floats all sit in memory at once. Streamed, each chunk is a few
hundred rows rendered in a worker thread, so the loop keeps serving and memory stays one chunk.
The bytes are the same as Starlette's JSONResponse would send (same separators and escaping).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np

STREAM_ABOVE = 256 * 1024  # estimated bytes from which an answer is streamed
ROWS_PER_CHUNK = 256  # vector rows (or list items) rendered per chunk


def dumps(value: Any) -> str:
    """Starlette's JSONResponse rendering."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))


def _rows(array: np.ndarray) -> Iterator[str]:
    """A [n, d] array as a JSON list of lists, a few hundred rows per piece."""
    yield "["
    for start in range(0, len(array), ROWS_PER_CHUNK):
        piece = dumps(array[start : start + ROWS_PER_CHUNK].tolist())[1:-1]
        yield ("," if start else "") + piece
    yield "]"


def _items(items: list[Any]) -> Iterator[str]:
    """A list whose items are each rendered whole (small), a few hundred per piece."""
    yield "["
    for start in range(0, len(items), ROWS_PER_CHUNK):
        yield ("," if start else "") + dumps(items[start : start + ROWS_PER_CHUNK])[1:-1]
    yield "]"


def pieces(value: Any) -> Iterator[str]:
    """JSON text of ``value`` in pieces: numpy arrays row by row, lists item by item, dicts key by key, and
    objects that render themselves (``json_pieces``)."""
    if hasattr(value, "json_pieces"):
        yield from value.json_pieces()
    elif isinstance(value, np.ndarray):
        if value.ndim == 2:
            yield from _rows(value)
        else:
            yield dumps(value.tolist())
    elif isinstance(value, list) and value and _nested(value[0]):
        yield "["
        for i, item in enumerate(value):
            if i:
                yield ","
            yield from pieces(item)
        yield "]"
    elif isinstance(value, list):
        yield from _items(value)
    elif isinstance(value, dict):
        yield "{"
        for i, (key, item) in enumerate(value.items()):
            yield ("," if i else "") + dumps(key) + ":"
            yield from pieces(item)
        yield "}"
    else:
        yield dumps(value)


def _nested(value: Any) -> bool:
    """Whether an item holds arrays or lists (rendered piece by piece) rather than only scalars."""
    if isinstance(value, (list, np.ndarray)) or hasattr(value, "json_pieces"):
        return True
    return isinstance(value, dict) and any(isinstance(v, (list, dict, np.ndarray)) for v in value.values())


def chunks(value: Any, size: int = 64 * 1024) -> Iterator[bytes]:
    """UTF-8 chunks of about ``size`` bytes."""
    buffer: list[str] = []
    held = 0
    for piece in pieces(value):
        buffer.append(piece)
        held += len(piece)
        if held >= size:
            yield "".join(buffer).encode("utf-8")
            buffer, held = [], 0
    if buffer:
        yield "".join(buffer).encode("utf-8")


def answer(content: Any, headers: dict[str, str] | None = None, estimate: int = 0) -> Any:
    """JSONResponse for a small answer; a StreamingResponse (chunks rendered in a thread) for a large one.

    ``content`` may hold numpy arrays (rendered as lists); ``estimate``: its expected size in bytes."""
    from starlette.responses import JSONResponse, StreamingResponse

    if estimate < STREAM_ABOVE:
        return JSONResponse(_plain(content), headers=headers)
    # A sync iterator: Starlette pulls each chunk in its thread pool, off the event loop.
    return StreamingResponse(chunks(content), media_type="application/json", headers=headers)


def _plain(value: Any) -> Any:
    if hasattr(value, "plain"):
        return value.plain()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
