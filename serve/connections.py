"""Connection-level guards uvicorn does not have: a deadline for each request's headers, and a cap on
open connections per client address.

uvicorn times out idle keep-alive connections, but a new connection that sends nothing, or sends its
headers a byte at a time, stays open for ever; 500 of them pin 500 sockets and tasks. The guard is a
mixin on uvicorn's own HTTP protocol class (``guarded_protocol``): it closes a connection whose headers
do not arrive within ``header_timeout`` (with a 408 in the error shape), and answers a connection over
``per_address`` from one address with a 429 and closes it. Bodies are timed by the app's guard (app.py).
"""

from __future__ import annotations

import json
from typing import Any

from polyglot_onnx.serve.errors import Kind, ServeError, error_body


def refusal(err: ServeError) -> bytes:
    """A whole HTTP/1.1 response in the TEI error shape, for a connection closed before any route ran."""
    body = json.dumps(error_body("/", err)).encode()
    status = err.kind.status
    phrase = {408: "Request Timeout", 429: "Too Many Requests"}.get(status, "Error")
    head = (f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n")
    if err.kind is Kind.OVERLOADED:
        head += "retry-after: 1\r\n"
    return head.encode() + b"\r\n" + body


class ConnectionGuard:
    """Mixin placed before uvicorn's HttpToolsProtocol / H11Protocol (both keep ``cycle`` and ``transport``)."""

    header_timeout: float = 0.0
    per_address: int = 0
    transport: Any
    cycle: Any
    loop: Any
    server_state: Any

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._timer: Any = None
        peer = transport.get_extra_info("peername")
        self._address = str(peer[0]) if peer else ""
        counts = self._counts()
        counts[self._address] = counts.get(self._address, 0) + 1
        if self.per_address and counts[self._address] > self.per_address:
            err = ServeError(Kind.OVERLOADED, f"more than {self.per_address} open connections from {self._address} "
                             "(--max-connections-per-address): reuse connections, or retry after a second",
                             code="too_many_connections")
            transport.write(refusal(err))
            transport.close()
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        counts = self._counts()
        left = counts.get(self._address, 1) - 1
        if left > 0:
            counts[self._address] = left
        else:
            counts.pop(self._address, None)
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._arm()  # the next request's headers are due within header_timeout too

    def _counts(self) -> dict[str, int]:
        counts: dict[str, int] | None = getattr(self.server_state, "polyglot_per_address", None)
        if counts is None:
            counts = {}
            self.server_state.polyglot_per_address = counts
        return counts

    def _arm(self) -> None:
        self._disarm()
        if self.header_timeout:
            self._timer = self.loop.call_later(self.header_timeout, self._headers_overdue)

    def _disarm(self) -> None:
        if getattr(self, "_timer", None) is not None:
            self._timer.cancel()
            self._timer = None

    def _headers_overdue(self) -> None:
        """No request in progress (its headers never completed): answer 408 and close."""
        self._timer = None
        in_progress = self.cycle is not None and not self.cycle.response_complete
        if in_progress or self.transport.is_closing():
            return
        err = ServeError(Kind.TIMEOUT, f"request headers did not arrive within {self.header_timeout:g} s "
                         "(--header-timeout): send the whole request at once", code="request_timeout")
        self.transport.write(refusal(err))
        self.transport.close()


def guarded_protocol(base: type, header_timeout: float, per_address: int) -> type:
    """uvicorn's protocol class ``base`` with the guards, configured (pass it as uvicorn.Config(http=...))."""
    return type(f"Guarded{base.__name__}", (ConnectionGuard, base),
                {"header_timeout": float(header_timeout), "per_address": int(per_address)})


def uvicorn_protocol() -> type:
    """The class uvicorn's 'auto' would pick: httptools when installed, else h11."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return H11Protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    return HttpToolsProtocol
