"""Every refusal the server gives, and its status code and body, decided here and only here.

OpenAI routes (``/v1/...``) answer ``{"error": {"message", "type", "code", "param"}}`` (what the openai
client reads); every other route answers TEI's ``{"error", "error_type"}``.
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
    PAYLOAD = (413, "PayloadTooLarge", "invalid_request_error")
    VALIDATION = (422, "Validation", "invalid_request_error")
    BACKEND = (424, "Backend", "server_error")
    OVERLOADED = (429, "Overloaded", "rate_limit_error")
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

    def __str__(self) -> str:
        return self.message


def error_body(path: str, err: ServeError) -> dict[str, Any]:
    if path.startswith("/v1/"):
        code = err.code or err.kind.name.lower()
        return {"error": {"message": err.message, "type": err.kind.value[2], "code": code, "param": err.param}}
    return {"error": err.message, "error_type": err.kind.value[1]}


def error_headers(err: ServeError) -> dict[str, str]:
    if err.kind is Kind.OVERLOADED:
        return {"Retry-After": "1"}
    if err.kind is Kind.UNAUTHORIZED:
        return {"WWW-Authenticate": "Bearer"}
    if err.kind is Kind.UNHEALTHY:
        return {"Retry-After": "5"}
    return {}


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
        return f"request body is not valid JSON ({first.get('ctx', {}).get('error', 'parse error')})", None
    if kind == "missing":
        return f"field {path!r} is required", path or None
    where = f"field {path!r}" if path else "request body"
    return f"{where}: {first.get('msg', 'invalid value')}", path or None
