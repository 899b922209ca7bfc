"""What the routes share: served models, their queues, health, metrics and request-level checks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from time import perf_counter
from typing import Any

from polyglot_onnx.errors import InputError, PolyglotError, first_line
from polyglot_onnx.serve import cost as costs
from polyglot_onnx.serve.backend import Backend
from polyglot_onnx.serve.batching import BatchQueue, Ticket
from polyglot_onnx.serve.config import ServeConfig
from polyglot_onnx.serve.errors import Kind, ServeError
from polyglot_onnx.serve.keys import BatchKey
from polyglot_onnx.serve.memory import Trimmer
from polyglot_onnx.serve.metrics import Metrics

log = logging.getLogger("polyglot_onnx.serve")

STARTING, READY, DRAINING = "starting", "ready", "draining"
UNKNOWN_NAMES_LOGGED = 1024  # distinct unknown model names warned about (a client could send millions)


class ClientGone(Exception):
    """The client disconnected while its inputs waited; nothing is sent back."""


@dataclass
class Answer:
    """Results in input order plus what the timing headers report (the route adds its tokenizing time and
    the characters it was sent)."""

    results: list[Any]
    tokens: int
    queue_seconds: float
    inference_seconds: float
    compute_type: str = "cpu"
    variant: str = ""
    tokenization_seconds: float = 0.0
    characters: int = 0

    def headers(self, started: float) -> dict[str, str]:
        """TEI's headers (integer milliseconds; x-compute-time is the whole request's, as TEI's is) and the
        variant the vectors came from."""
        total = str(int((perf_counter() - started) * 1000))
        return {
            "x-compute-type": self.compute_type,
            "x-compute-time": total,
            "x-compute-characters": str(self.characters),
            "x-compute-tokens": str(self.tokens),
            "x-total-time": total,
            "x-tokenization-time": str(int(self.tokenization_seconds * 1000)),
            "x-queue-time": str(int(self.queue_seconds * 1000)),
            "x-inference-time": str(int(self.inference_seconds * 1000)),
            VARIANT_HEADER: self.variant,
        }


VARIANT_HEADER = "x-polyglot-variant"


class Service:
    def __init__(self, config: ServeConfig, backends: list[Backend] | None = None) -> None:
        self.config = config
        self.metrics = Metrics()
        self.state = STARTING
        self.in_flight = 0  # requests admitted (whole body in), not yet answered
        self.uploading = 0  # requests whose body is still arriving
        self.memory = Trimmer()
        self.backends: dict[str, Backend] = {}
        self.queues: dict[str, BatchQueue] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_started: asyncio.Future[None] | None = None
        self._drain_expired: asyncio.Future[None] | None = None
        self._unknown_names: set[str] = set()
        if backends is not None:
            self._register(backends)

    @property
    def drain_started(self) -> asyncio.Future[None]:
        """Done once a shutdown signal arrived: bodies still arriving are cut off (503)."""
        if self._drain_started is None:
            self._drain_started = asyncio.get_running_loop().create_future()
        return self._drain_started

    @property
    def drain_expired(self) -> asyncio.Future[None]:
        """Done once --drain-timeout has passed: requests whose answer has not started get a 503."""
        if self._drain_expired is None:
            self._drain_expired = asyncio.get_running_loop().create_future()
        return self._drain_expired

    def begin_drain(self) -> None:
        """From a signal handler: /health says draining, new requests get 503, uploads are cut off."""
        self.state = DRAINING
        if self._loop is not None:
            self._loop.call_soon_threadsafe(_finish, self.drain_started)

    def end_drain(self) -> None:
        """On the event loop, once --drain-timeout has passed."""
        _finish(self.drain_expired)

    @property
    def busy(self) -> int:
        return self.in_flight + self.uploading

    def _register(self, backends: list[Backend]) -> None:
        for backend in backends:
            if backend.name in self.backends:
                raise PolyglotError(
                    f"two packages are served as {backend.name!r}: name them with --name NAME=DIR"
                )
            self.backends[backend.name] = backend

    async def start(self) -> None:
        """Load (when not given), warm up, start one queue per model; then /health says ready."""
        self._loop = asyncio.get_running_loop()
        self._drain_started = self._loop.create_future()  # on the loop that serves (an app may be started again)
        self._drain_expired = self._loop.create_future()
        if not self.backends:
            loaded = [await asyncio.to_thread(Backend.load, spec, self.config) for spec in self.config.models]
            self._register(loaded)
        for name, backend in self.backends.items():
            rates = await asyncio.to_thread(backend.warm_up)
            queue = BatchQueue(
                backend.run,
                self.config.max_batch_tokens,
                self.config.max_batch_rows,
                backend.pad_multiple,
                on_batch=partial(self.metrics.observe_batch, name),
                name=name,
                max_batch_seconds=self.config.max_batch_ms / 1000,
            )
            queue.seed(rates)
            queue.start()
            self.queues[name] = queue
            self.metrics.queue_depth.labels(name).set_function(partial(_depth, queue))
            self.metrics.model_info.labels(
                name, str(backend.description.get("model")), backend.variant, backend.provider,
                str(backend.batch_invariant).lower(),
            ).set(1)
        self.metrics.tei.queue_size.set_function(lambda: sum(q.depth for q in self.queues.values()))
        self.state = READY

    async def stop(self) -> None:
        self.state = DRAINING
        for queue in self.queues.values():
            await queue.stop()

    def model(self, name: str | None, any_name: bool = False) -> Backend:
        """The named model (its served name or its package's model name), or the first served when the
        request names none; 404 lists what is served. With ``any_name`` (the OpenAI routes, as TEI's) an
        unknown name gets the first model and one logged warning per name, unless --strict-model-name."""
        if name is None:
            return next(iter(self.backends.values()))
        if name in self.backends:
            return self.backends[name]
        for backend in self.backends.values():
            if name in backend.aliases:
                return backend
        served = ", ".join(map(repr, self.backends))
        if any_name and not self.config.strict_model_name:
            first = next(iter(self.backends.values()))
            if len(self._unknown_names) < UNKNOWN_NAMES_LOGGED and name not in self._unknown_names:
                self._unknown_names.add(name)
                log.warning("requests name model %r, which is not served here: answering with %r (served: %s; "
                            "--strict-model-name refuses unknown names)", name[:200], first.name, served)
            return first
        raise ServeError(Kind.NOT_FOUND, f"model {name!r} is not served here: choose one of {served}",
                         code="model_not_found", param="model")

    def check_count(self, items: Sequence[Any], field: str, limit: int | None = None) -> None:
        """Not empty, and at most --max-client-batch-size inputs (or the route's own ``limit``)."""
        if not items:
            raise ServeError(Kind.EMPTY, f"`{field}` cannot be empty: send at least one input", code="empty_input",
                             param=field)
        limit = self.config.max_client_batch_size if limit is None else limit
        if len(items) > limit:
            flag = " (--max-client-batch-size)" if limit == self.config.max_client_batch_size else ""
            raise ServeError(
                Kind.VALIDATION,
                f"batch size {len(items)} > maximum allowed batch size {limit}{flag}: split the request",
                code="batch_too_large",
                param=field,
            )

    def check_cost(self, cost: costs.Cost, field: str = "inputs") -> None:
        """The per-request caps (413), before anything is queued."""
        costs.check(cost, self.config, field)

    async def compute(self, backend: Backend, key: BatchKey, inputs: Sequence[tuple[int, Any]], receive: Any,
                      keys: Sequence[BatchKey] | None = None, usage_tokens: int | None = None) -> Answer:
        """Queue the inputs, wait for every result (in order); a client that leaves drops its inputs.

        ``usage_tokens``: the request's token count as usage reports it, when it differs from the work
        queued (a long text read whole counts its tokens once, its windows overlap)."""
        queue = self.queues[backend.name]
        ticket = queue.submit(key, inputs, keys)
        try:
            results = await _wait(ticket, receive)
        except (ClientGone, asyncio.CancelledError):  # CancelledError: a host that cancels on disconnect (Ray Serve)
            self.metrics.dropped_inputs.labels(backend.name).inc(queue.cancel(ticket))
            raise
        except InputError as err:
            raise ServeError(Kind.VALIDATION, str(err), code="invalid_value") from err
        except Exception as err:
            log.error("model %s: batch failed: %s", backend.name, first_line(err))
            raise ServeError(
                Kind.BACKEND, f"inference failed for this request's batch: {first_line(err)}", code="backend_failure"
            ) from err
        tokens = ticket.tokens if usage_tokens is None else usage_tokens
        return Answer(results, tokens, ticket.queue_seconds, ticket.inference_seconds, backend.compute_type,
                      backend.variant)


def _finish(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _depth(queue: BatchQueue) -> int:
    return queue.depth


async def _wait(ticket: Ticket, receive: Any) -> list[Any]:
    if receive is None:
        return await ticket.done
    listener: asyncio.Future[Any] = asyncio.ensure_future(_disconnected(receive))
    waiting: set[asyncio.Future[Any]] = {ticket.done, listener}
    try:
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not listener.done():
            listener.cancel()
    if ticket.done in done:
        return list(ticket.done.result())
    raise ClientGone()


async def _disconnected(receive: Any) -> None:
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            return
