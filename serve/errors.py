"""Every refusal the server gives, and its status code and body, decided here and only here.

OpenAI routes (``/v1/...`` and TEI's alias ``/embeddings``) answer ``{"error": {"message", "type", "code",
"param"}}`` (what the openai client reads), an invalid request there with OpenAI's 400; every other route
answers TEI's ``{"error", "error_type"}`` with TEI's statuses (an invalid request is a 422).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class Kind(Enum):
    # (status, TEI error_type, OpenAI type)
    EMPTY = (400, "Empty", "invalid_request_error")
    UNAUTHORIZED = (401, "Unauthorized", "authentication_error")
    NOT_FOUND = (404, "NotFound", "invalid_request_error")
    METHOD = (405, "MethodNotAllowed", "invalid_request_error")
    TIMEOUT = (408, "RequestTimeout", "invalid_request_error")
    PAYLOAD = (413, "Validation", "invalid_request_error")  # TEI's error types have no 'too large' of their own
    VALIDATION = (422, "Validation", "invalid_request_error")
    BACKEND = (424, "Backend", "server_error")
    OVERLOADED = (429, "Overloaded", "rate_limit_error")
    INTERNAL = (500, "Internal", "server_error")
    UNHEALTHY = (503, "Unhealthy", "service_unavailable")

    @property
    def status(self) -> int:
        return self.value[0]


@dataclass
class ServeError(Exception):
    """A request the server refuses; ``code`` is OpenAI's machine-readable reason, ``param`` the field."""

    kind: Kind
    message: str
    code: str | None = None
    param: str | None = None
    close: bool = False  # the connection closes after this answer (say so: 'Connection: close')

    def __str__(self) -> str:
        return self.message


OPENAI_ALIASES = frozenset({"/embeddings"})  # TEI serves the OpenAI route here too, in OpenAI's shape


def is_openai(path: str) -> bool:
    return path.startswith("/v1/") or path in OPENAI_ALIASES


def status_for(path: str, err: ServeError) -> int:
    """The HTTP status: TEI's for its routes, OpenAI's 400 for an invalid request on the OpenAI routes."""
    if err.kind is Kind.VALIDATION and is_openai(path):
        return 400
    return err.kind.status


def error_body(path: str, err: ServeError) -> dict[str, Any]:
    if is_openai(path):
        code = err.code or err.kind.name.lower()
        return {"error": {"message": err.message, "type": err.kind.value[2], "code": code, "param": err.param}}
    return {"error": err.message, "error_type": err.kind.value[1]}


def error_headers(err: ServeError) -> dict[str, str]:
    headers = {"Connection": "close"} if err.close else {}
    if err.kind is Kind.OVERLOADED:
        headers["Retry-After"] = "1"
    if err.kind is Kind.UNAUTHORIZED:
        headers["WWW-Authenticate"] = "Bearer"
    if err.kind is Kind.UNHEALTHY:
        headers["Retry-After"] = "5"
    return headers


def body_error(cause: BaseException | None) -> ServeError:
    """A JSON body the parser could not read (FastAPI says only 'error parsing the body'): the reason, named."""
    if isinstance(cause, UnicodeDecodeError):
        message = (f"request body is not valid UTF-8 (byte 0x{cause.object[cause.start]:02x} at position "
                   f"{cause.start}): send JSON encoded as UTF-8")
    elif isinstance(cause, RecursionError):
        message = "request body nests arrays or objects too deeply to parse: send a flat JSON object"
    elif isinstance(cause, ValueError) and "digits" in str(cause):
        message = ("request body holds an integer with thousands of digits: send numbers a float32 or int64 "
                   "can hold")
    else:
        detail = f" ({type(cause).__name__})" if cause is not None else ""
        message = f"request body could not be parsed as JSON{detail}: send one JSON object"
    return ServeError(Kind.VALIDATION, message, code="invalid_json")


def http_error(status: int, detail: str, path: str) -> ServeError:
    """Starlette's own refusals (an unknown route, a wrong method) in the error shape."""
    if status == 404:
        return ServeError(Kind.NOT_FOUND, f"no route {path}: see the route table in docs/serving.md", code="not_found")
    if status == 405:
        return ServeError(Kind.METHOD, f"{path} does not take this method: {detail}", code="method_not_allowed")
    return ServeError(Kind.VALIDATION if 400 <= status < 500 else Kind.INTERNAL, str(detail), code="invalid_request")


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """pydantic's error list -> one line naming the field (``input[2]``), and that field."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    # Union members show up as locations ("str", "list[str]"): keep only the path into the JSON.
    path = ""
    for part in loc:
        if part.isdigit():
            path += f"[{part}]"
        elif "[" in part or part in {"str", "int", "list", "function-after"} or part.startswith("function"):
            continue
        else:
            path += f".{part}" if path else part
    kind = first.get("type", "")
    if kind == "json_invalid":
        ctx = first.get("ctx")
        reason = ctx.get("error", "parse error") if isinstance(ctx, dict) else "parse error"
        return f"request body is not valid JSON ({reason})", None
    if kind == "missing":
        return f"field {path!r} is required", path or None
    where = f"field {path!r}" if path else "request body"
    got = f", got {json_type(first['input'])}" if "input" in first and str(kind).endswith("_type") else ""
    return f"{where}: {first.get('msg', 'invalid value')}{got}", path or None


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages ('got a list')."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    for kind, name in ((str, "a string"), (int, "an integer"), (float, "a number"), (list, "a list"),
                       (dict, "an object")):
        if isinstance(value, kind):
            return name
    return type(value).__name__
