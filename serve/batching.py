"""The batching queue: inputs from concurrent requests merged into token-budget batches.

It knows token counts and group keys, not HTTP and not onnxruntime. Each input of a request is
queued on its own (a long text's windows and a long document's masks too); a batch is built around
one request's oldest waiting input (so nothing waits for a batch that cannot include it) and grows
towards the inputs closest to it in length, which wastes the fewest padded tokens, until ``rows x
padded length`` would pass the budget. One batch at a time runs in a single worker thread per model,
off the event loop; while it runs the next one gathers.

Two rules keep one large request from holding the model for seconds: requests take turns (a request
not served yet goes first, then the ones already served, round robin, with at least one turn in
FAIRNESS_TURNS for those), and a batch is cut to about ``max_batch_seconds`` of work at the rate
measured on the previous batches of its kind, so a small request waits one short batch, not a long one.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from polyglot_onnx.errors import InputError

RunBatch = Callable[[Any, list[Any]], list[Any]]  # (key, payloads) -> results: serve/keys.py keys
# Padding bound for a batch (see Batcher._fits).
PADDING_SLACK = 1.5
PADDING_ALLOWANCE = 64
# New requests go before ones already served, but a served one gets at least one batch in this many.
FAIRNESS_TURNS = 4
# Weight of the newest batch in the measured seconds per padded token.
RATE_WEIGHT = 0.3


@dataclass
class BatchReport:
    """What one onnxruntime call did, for metrics."""

    rows: int
    padded_tokens: int
    tokens: int
    queue_seconds: list[float]
    inference_seconds: float
    failed: bool


class Ticket:
    """One request's inputs: results in input order, timings, and whether the client went away."""

    def __init__(self, count: int, loop: asyncio.AbstractEventLoop) -> None:
        self.results: list[Any] = [None] * count
        self.remaining = count
        self.done: asyncio.Future[list[Any]] = loop.create_future()
        # A client that left never awaits its answer: mark a failure as seen so asyncio does not log it.
        self.done.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.enqueued = perf_counter()
        self.queue_seconds = 0.0
        self.inference_seconds = 0.0
        self.tokens = 0
        self.cancelled = False
        self.waiting: deque[_Item] = deque()  # this request's inputs not yet in a batch, oldest first
        self.served = False  # one of its inputs has been in a batch
        self.in_rotation = False

    def _set(self, index: int, value: Any) -> None:
        self.results[index] = value
        self.remaining -= 1
        if self.remaining == 0 and not self.done.done():
            self.done.set_result(self.results)

    def _fail(self, err: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(err)


@dataclass(eq=False)
class _Item:
    key: Hashable
    length: int
    payload: Any
    seq: int
    index: int
    ticket: Ticket
    taken: bool = field(default=False)

    @property
    def order(self) -> tuple[int, int]:
        return (self.length, self.seq)


class BatchQueue:
    """Token-budget dynamic batching for one model; ``run`` is called in one worker thread."""

    def __init__(
        self,
        run: RunBatch,
        max_batch_tokens: int,
        max_batch_rows: int | None = None,
        pad_multiple: int = 1,
        on_batch: Callable[[BatchReport], None] | None = None,
        name: str = "model",
        max_batch_seconds: float | None = None,
    ) -> None:
        self._run = run
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_rows = max_batch_rows or (1 << 62)
        self.pad_multiple = max(1, pad_multiple)
        self.max_batch_seconds = max_batch_seconds or None
        self._on_batch = on_batch
        self._fresh: deque[Ticket] = deque()  # requests with waiting inputs, never served yet
        self._rotation: deque[Ticket] = deque()  # requests served at least once, still waiting
        self._turns = 0  # batches in a row led by fresh requests
        self._rate: dict[Hashable, float] = {}  # measured seconds per padded token, per kind of batch
        self._budget = max_batch_tokens  # the token budget of the batch being cut
        self._groups: dict[Hashable, list[_Item]] = {}
        self._orders: dict[Hashable, list[tuple[int, int]]] = {}
        self._seq = itertools.count()
        self._depth = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{name}")

    @property
    def depth(self) -> int:
        """Inputs waiting (not yet in a running batch)."""
        return self._depth

    def seed(self, rates: Mapping[Any, float]) -> None:
        """First estimates of seconds per padded token per kind (the warm-up's), until batches measure them."""
        for kind, rate in rates.items():
            if rate > 0:
                self._rate.setdefault(kind, rate)

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    def submit(self, key: Hashable, inputs: Sequence[tuple[int, Any]], keys: Sequence[Hashable] | None = None) -> Ticket:
        """Queue ``(token_length, payload)`` pairs of one request under ``key`` (same key = same call);
        ``keys`` gives each input its own key (a request whose long texts are read whole as windows)."""
        if self._wake is None:
            raise RuntimeError("BatchQueue.start() was not called")
        ticket = Ticket(len(inputs), asyncio.get_running_loop())
        for index, (length, payload) in enumerate(inputs):
            item_key = key if keys is None else keys[index]
            group = self._groups.setdefault(item_key, [])
            orders = self._orders.setdefault(item_key, [])
            item = _Item(item_key, max(1, int(length)), payload, next(self._seq), index, ticket)
            ticket.tokens += item.length
            position = bisect.bisect(orders, item.order)
            orders.insert(position, item.order)
            group.insert(position, item)
            ticket.waiting.append(item)
        self._fresh.append(ticket)
        self._depth += len(inputs)
        self._wake.set()
        return ticket

    def cancel(self, ticket: Ticket) -> int:
        """The client went away: its waiting inputs are dropped, not computed; returns how many."""
        ticket.cancelled = True
        dropped = 0
        for key, group in self._groups.items():
            keep = [i for i in group if i.ticket is not ticket]
            if len(keep) != len(group):
                self._depth -= len(group) - len(keep)
                dropped += len(group) - len(keep)
                for item in group:
                    if item.ticket is ticket:
                        item.taken = True
                self._groups[key] = keep
                self._orders[key] = [i.order for i in keep]
        return dropped

    def _width(self, length: int) -> int:
        return -(-length // self.pad_multiple) * self.pad_multiple

    def _fits(self, rows: int, width: int, real_tokens: int) -> bool:
        """Within the token budget, and padding stays a bounded share of the work: measured on
        MiniLM int8, one batch of 64 mixed-length texts padded to the longest cost 2.7x per text
        what batches of 8 did, so a batch grows only while padded <= 1.5 x real tokens + 64."""
        padded = rows * self._width(width)
        return padded <= self._budget and padded <= PADDING_SLACK * real_tokens + PADDING_ALLOWANCE

    def _next_ticket(self) -> Ticket | None:
        """Whose turn it is: a request not served yet, else the next served one (round robin); a served
        one also gets every FAIRNESS_TURNS-th batch, so a stream of new requests cannot starve it."""
        for queue in (self._fresh, self._rotation):
            while queue and not _has_waiting(queue[0]):
                queue.popleft().in_rotation = False
        if self._fresh and (not self._rotation or self._turns < FAIRNESS_TURNS - 1):
            self._turns += 1
            return self._fresh.popleft()
        self._turns = 0
        if self._rotation:
            ticket = self._rotation.popleft()
            ticket.in_rotation = False
            return ticket
        return None

    def _budget_for(self, key: Hashable) -> int:
        """Padded tokens a batch of this kind may hold: the token budget, and about max_batch_seconds of work."""
        if self.max_batch_seconds is None:
            return self.max_batch_tokens
        # a kind not measured yet is budgeted at the slowest rate known: its first batch must not be the
        # largest one (onnxruntime keeps the memory of the largest batch it ran)
        rate = self._rate.get(_kind(key), max(self._rate.values(), default=None))
        if rate is None:
            return self.max_batch_tokens
        return max(1, min(self.max_batch_tokens, int(self.max_batch_seconds / rate)))

    def _cut(self) -> list[_Item]:
        """One request's oldest waiting input plus its nearest neighbours in length, under the budget."""
        ticket = self._next_ticket()
        if ticket is None:
            return []
        head = ticket.waiting[0]
        self._budget = self._budget_for(head.key)
        group, orders = self._groups[head.key], self._orders[head.key]
        lo = hi = bisect.bisect_left(orders, head.order)
        width = head.length
        real = head.length
        while hi - lo + 1 < self.max_batch_rows:
            rows = hi - lo + 1
            down = up = None
            if lo > 0 and self._fits(rows + 1, width, real + group[lo - 1].length):
                down = width - group[lo - 1].length
            if hi + 1 < len(group):
                wider = group[hi + 1].length
                if self._fits(rows + 1, wider, real + wider):
                    up = (wider - width) * rows
            if down is None and up is None:
                break
            if up is None or (down is not None and down <= up):
                lo -= 1
                real += group[lo].length
            else:
                hi += 1
                width = group[hi].length
                real += width
        batch = group[lo : hi + 1]
        del group[lo : hi + 1]
        del orders[lo : hi + 1]
        for item in batch:
            item.taken = True
            item.ticket.served = True
        self._depth -= len(batch)
        for owner in {id(i.ticket): i.ticket for i in batch}.values():
            if _has_waiting(owner) and not owner.in_rotation:
                owner.in_rotation = True
                self._rotation.append(owner)
        # Longest first, ties in arrival order: the row order Embedder.encode uses for the same texts.
        batch.sort(key=lambda i: (-i.length, i.seq))
        return batch

    async def _work(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = self._cut()
            if not batch:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._execute(loop, batch)

    async def _execute(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        started = perf_counter()
        failed = False
        try:
            outputs = await loop.run_in_executor(self._executor, self._run, batch[0].key, [i.payload for i in batch])
        except InputError:
            # One bad input must not fail its neighbours: each request's inputs run again on their own.
            await self._retry_per_request(loop, batch, started)
            return
        except Exception as err:  # noqa: BLE001 - a failed call fails only the requests in this batch
            failed = True
            outputs = [err] * len(batch)
        seconds = perf_counter() - started
        if not failed:
            self._measure(batch, seconds)
        self._deliver(batch, outputs, started, seconds, failed)

    def _measure(self, batch: list[_Item], seconds: float) -> None:
        padded = len(batch) * self._width(max(i.length for i in batch))
        kind = _kind(batch[0].key)
        rate = seconds / max(padded, 1)
        old = self._rate.get(kind)
        self._rate[kind] = rate if old is None else (1 - RATE_WEIGHT) * old + RATE_WEIGHT * rate

    async def _retry_per_request(self, loop: asyncio.AbstractEventLoop, batch: list[_Item], started: float) -> None:
        by_ticket: dict[int, list[_Item]] = {}
        for item in batch:
            by_ticket.setdefault(id(item.ticket), []).append(item)
        for items in by_ticket.values():
            begin = perf_counter()
            try:
                outputs = await loop.run_in_executor(self._executor, self._run, items[0].key, [i.payload for i in items])
                failed = False
            except Exception as err:  # noqa: BLE001 - InputError -> 422, anything else -> 424, this request only
                outputs, failed = [err] * len(items), True
            self._deliver(items, outputs, started, perf_counter() - begin, failed)

    def _deliver(self, batch: list[_Item], outputs: list[Any], started: float, seconds: float, failed: bool) -> None:
        queue_seconds = []
        for item, output in zip(batch, outputs):
            ticket = item.ticket
            waited = started - ticket.enqueued
            queue_seconds.append(waited)
            ticket.queue_seconds = max(ticket.queue_seconds, waited)
            if failed:
                ticket._fail(output)
                self.cancel(ticket)
            else:
                ticket._set(item.index, output)
        for ticket in {id(i.ticket): i.ticket for i in batch}.values():
            ticket.inference_seconds += seconds
        if self._on_batch is not None:
            width = self._width(max(i.length for i in batch))
            self._on_batch(
                BatchReport(len(batch), width * len(batch), sum(i.length for i in batch), queue_seconds, seconds, failed)
            )


def _has_waiting(ticket: Ticket) -> bool:
    """Drops the request's inputs already taken (or cancelled) from the front of its queue."""
    while ticket.waiting and ticket.waiting[0].taken:
        ticket.waiting.popleft()
    return bool(ticket.waiting)


def _kind(key: Hashable) -> Hashable:
    """What a batch's cost depends on: the kind of call (serve/keys.py), not the requests' own options."""
    return getattr(key, "kind", key)
