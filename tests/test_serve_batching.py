"""The serving queue on its own: token budget, oldest-first, order restored, dropped clients, failures."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'polyglot-onnx[serve]'")

from polyglot_onnx.errors import InputError, PolyglotError
from polyglot_onnx.serve.batching import BatchQueue


class Recorder:
    """A fake model: returns each payload doubled, records every batch it was given."""

    def __init__(self, fail_on: object = None, bad_input: object = None) -> None:
        self.batches: list[list[object]] = []
        self.fail_on = fail_on
        self.bad_input = bad_input

    def __call__(self, key, payloads):
        self.batches.append(list(payloads))
        if self.fail_on in payloads:
            raise PolyglotError("onnxruntime failed on a batch")
        if self.bad_input in payloads:
            raise InputError("bad input")
        return [(key, p, p * 2) for p in payloads]


def run(coro):
    return asyncio.run(coro)


def test_budget_order_and_oldest_first():
    rec = Recorder()

    async def go():
        queue = BatchQueue(rec, max_batch_tokens=40, name="t")
        queue.start()
        # queued before the worker gets a turn: one cut sees all of them
        a = queue.submit(("s",), [(10, 1), (3, 2), (12, 3)])
        b = queue.submit(("s",), [(4, 4), (50, 5)])  # 50 > budget: runs alone, still runs
        c = queue.submit(("t",), [(2, 6)])  # another group key never shares a batch
        results = await asyncio.gather(a.done, b.done, c.done)
        await queue.stop()
        return results

    ra, rb, rc = run(go())
    assert [r[1] for r in ra] == [1, 2, 3] and [r[1] for r in rb] == [4, 5] and rc == [(("t",), 6, 12)]
    lengths = {1: 10, 2: 3, 3: 12, 4: 4, 5: 50, 6: 2}
    for batch in rec.batches:
        width = max(lengths[p] for p in batch)
        assert len(batch) == 1 or len(batch) * width <= 40, batch
        assert [lengths[p] for p in batch] == sorted((lengths[p] for p in batch), reverse=True)
    assert [5] in rec.batches and [6] in rec.batches
    # the first batch holds the oldest input (payload 1)
    assert 1 in rec.batches[0]


def test_cancelled_inputs_are_not_computed():
    rec = Recorder()

    async def go():
        queue = BatchQueue(rec, max_batch_tokens=1000, name="t")
        queue.start()
        gone = queue.submit(("s",), [(5, 1), (5, 2)])
        kept = queue.submit(("s",), [(5, 3)])
        assert queue.cancel(gone) == 2  # how many were dropped (the server's dropped-inputs counter)
        assert queue.depth == 1
        out = await kept.done
        await queue.stop()
        return out

    assert [r[1] for r in run(go())] == [3]
    assert all(p not in (1, 2) for batch in rec.batches for p in batch)


def test_backend_failure_fails_only_its_batch_and_bad_input_only_its_request():
    async def go(rec, first, second):
        queue = BatchQueue(rec, max_batch_tokens=1000, name="t")
        queue.start()
        a = queue.submit(("s",), first)
        b = queue.submit(("s",), second)
        out = await asyncio.gather(a.done, b.done, return_exceptions=True)
        after = await queue.submit(("s",), [(3, 9)]).done  # still serving
        await queue.stop()
        return out, after

    (ra, rb), after = run(go(Recorder(fail_on=1), [(5, 1)], [(5, 2)]))
    assert isinstance(ra, PolyglotError) and isinstance(rb, PolyglotError)  # one batch: both fail
    assert after[0][1] == 9
    (ra, rb), _ = run(go(Recorder(bad_input=1), [(5, 1)], [(5, 2)]))
    assert isinstance(ra, InputError) and [r[1] for r in rb] == [2]  # retried alone: the neighbour succeeds


def test_no_batching_mode_runs_one_row_at_a_time():
    rec = Recorder()

    async def go():
        queue = BatchQueue(rec, max_batch_tokens=1000, max_batch_rows=1, name="t")
        queue.start()
        out = await queue.submit(("s",), [(3, 1), (4, 2), (5, 3)]).done
        await queue.stop()
        return out

    assert [r[1] for r in run(go())] == [1, 2, 3]
    assert all(len(b) == 1 for b in rec.batches)


def test_per_input_keys_split_one_request_and_keep_its_order():
    """A request whose long texts are read whole: those inputs run under their own key, results in order."""
    rec = Recorder()

    async def go():
        queue = BatchQueue(rec, max_batch_tokens=1000, name="t")
        queue.start()
        out = await queue.submit(("s",), [(3, 1), (900, 2), (4, 3)], keys=[("s",), ("w",), ("s",)]).done
        await queue.stop()
        return out

    assert run(go()) == [(("s",), 1, 2), (("w",), 2, 4), (("s",), 3, 6)]
    assert sorted(map(sorted, rec.batches)) == [[1, 3], [2]]


def test_a_new_request_goes_before_the_rest_of_a_large_one():
    """Requests take turns: one arriving while a large request's inputs wait is served in the next batch."""
    rec = Recorder()

    async def go():
        queue = BatchQueue(rec, max_batch_tokens=20, name="t")
        queue.start()
        large = queue.submit(("s",), [(10, 100 + i) for i in range(10)])  # five batches of two
        await asyncio.sleep(0)  # its first batch is cut
        small = queue.submit(("s",), [(10, 1)])
        out = await asyncio.gather(large.done, small.done)
        await queue.stop()
        return out

    run(go())
    position = next(k for k, batch in enumerate(rec.batches) if 1 in batch)
    assert position <= 1, rec.batches  # not behind the large request's remaining four batches


def test_a_served_request_is_not_starved_by_new_ones():
    """New requests go first, but a request already served gets at least one batch in FAIRNESS_TURNS."""
    from polyglot_onnx.serve.batching import FAIRNESS_TURNS

    rec = Recorder()

    async def go():
        queue = BatchQueue(rec, max_batch_tokens=10, name="t")
        queue.start()
        large = queue.submit(("s",), [(10, 100 + i) for i in range(6)])
        await asyncio.sleep(0)
        small = [queue.submit(("s",), [(10, i)]) for i in range(3 * FAIRNESS_TURNS)]
        await asyncio.gather(large.done, *(t.done for t in small))
        await queue.stop()

    run(go())
    led_by_large = [k for k, batch in enumerate(rec.batches) if batch[0] >= 100]
    gaps = np.diff(led_by_large)
    assert len(led_by_large) == 6 and gaps.max() <= FAIRNESS_TURNS, rec.batches


def test_batches_are_cut_to_the_measured_time_budget():
    """At 1 ms per padded token (seeded, then measured) and 10 ms per batch, a batch holds at most 10 padded
    tokens (one input alone when it is larger)."""
    import time

    lengths = {i: 4 for i in range(8)} | {99: 30}

    class Slow(Recorder):
        def __call__(self, key, payloads):
            time.sleep(0.001 * len(payloads) * max(lengths[p] for p in payloads))
            return super().__call__(key, payloads)

    rec = Slow()

    async def go():
        queue = BatchQueue(rec, max_batch_tokens=1000, name="t", max_batch_seconds=0.010)
        queue.seed({"s": 0.001})
        queue.start()
        out = await queue.submit(("s",), [(4, i) for i in range(8)] + [(30, 99)]).done
        await queue.stop()
        return out

    assert [r[1] for r in run(go())] == [*range(8), 99]
    assert all(len(b) * max(lengths[p] for p in b) <= 10 or len(b) == 1 for b in rec.batches), rec.batches
