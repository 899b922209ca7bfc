"""Prometheus metrics, one registry per app (several apps in one process do not collide).

Ours (``polyglot_*``) and TEI's (``te_*``, router/src/lib.rs, core/src/queue.rs and tokenization.rs,
with TEI's buckets), so a dashboard built for TEI reads this server too.
"""

from __future__ import annotations

import threading
from typing import Any

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class Metrics:
    """Requests by route and status, durations, batch shapes, tokens, queue depth, in-flight, model info."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("polyglot_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.request_seconds = Histogram(
            "polyglot_request_duration_seconds", "Whole request time", ["route"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_seconds = Histogram(
            "polyglot_queue_duration_seconds", "Time an input waited for its batch", ["model"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.inference_seconds = Histogram(
            "polyglot_inference_duration_seconds", "onnxruntime time per batch", ["model"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.batch_size = Histogram("polyglot_batch_size", "Rows per batch", ["model"], buckets=SIZE_BUCKETS, registry=r)
        self.batch_tokens = Histogram(
            "polyglot_batch_tokens", "Padded tokens (rows x padded length) per batch", ["model"],
            buckets=TOKEN_BUCKETS, registry=r,
        )
        self.tokens = Counter("polyglot_tokens", "Input tokens computed (without padding)", ["model"], registry=r)
        self.batch_failures = Counter("polyglot_batch_failures", "Batches that failed in onnxruntime", ["model"], registry=r)
        self.dropped_inputs = Counter(
            "polyglot_dropped_inputs", "Queued inputs dropped, not computed, because their client disconnected",
            ["model"], registry=r,
        )
        self.queue_depth = Gauge("polyglot_queue_depth", "Inputs waiting for a batch", ["model"], registry=r)
        self.in_flight = Gauge("polyglot_requests_in_flight", "Requests being served", registry=r)
        self.model_info = Gauge(
            "polyglot_model_info", "Served models (value 1)",
            ["model", "package_model", "variant", "provider", "batch_invariant"], registry=r,
        )
        self.tei = TeiMetrics(r)

    def observe_batch(self, model: str, report: Any) -> None:
        self.batch_size.labels(model).observe(report.rows)
        self.batch_tokens.labels(model).observe(report.padded_tokens)
        self.tei.batch_next_size.observe(report.rows)
        self.tei.batch_next_tokens.observe(report.padded_tokens)
        self.inference_seconds.labels(model).observe(report.inference_seconds)
        for waited in report.queue_seconds:
            self.queue_seconds.labels(model).observe(waited)
        if report.failed:
            self.batch_failures.labels(model).inc()
        else:
            self.tokens.labels(model).inc(report.tokens)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry) + self.tei.counters.render(), CONTENT_TYPE_LATEST


# TEI's buckets (router/src/prometheus.rs): durations 1.5e-5 s x 1.5^k, sizes and tokens powers of two
TEI_DURATION_BUCKETS = tuple(float(f"{1e-5 * 1.5 ** (k + 1):.6g}") for k in range(35))
TEI_SIZE_BUCKETS = tuple(float(2**k) for k in range(13))
TEI_TOKEN_BUCKETS = tuple(float(2**k) for k in range(21))
TEI_LENGTH_BUCKETS = tuple(float(2**k) for k in range(20))
TEI_COUNTERS = {
    "te_request_count": ("Embedding requests received, by single input or batch", "method"),
    "te_request_success": ("Embedding requests answered, by single input or batch", "method"),
    "te_request_failure": ("Embedding requests refused or failed, by reason", "err"),
    "te_embed_count": ("Inputs received by embedding requests", None),
    "te_embed_success": ("Inputs embedded", None),
}


class TeiMetrics:
    """TEI's metric names. Its exporter writes counters under their plain names (``te_request_count``, where
    prometheus-client would add ``_total``), so the counters are rendered here; histograms and the gauge
    are prometheus-client's, whose names already match."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Gauge, Histogram

        def duration(name: str, doc: str) -> Any:
            return Histogram(name, doc, buckets=TEI_DURATION_BUCKETS, registry=registry)

        self.request_duration = duration("te_request_duration", "Whole request time (seconds)")
        self.tokenization_duration = duration("te_request_tokenization_duration", "Tokenization time per request")
        self.queue_duration = duration("te_request_queue_duration", "Time a request's inputs waited for a batch")
        self.inference_duration = duration("te_request_inference_duration", "Model time per request")
        self.input_length = Histogram("te_request_input_length", "Tokens per input", buckets=TEI_LENGTH_BUCKETS,
                                      registry=registry)
        self.batch_next_size = Histogram("te_batch_next_size", "Rows per batch", buckets=TEI_SIZE_BUCKETS,
                                         registry=registry)
        self.batch_next_tokens = Histogram("te_batch_next_tokens", "Padded tokens per batch",
                                           buckets=TEI_TOKEN_BUCKETS, registry=registry)
        self.queue_size = Gauge("te_queue_size", "Inputs waiting for a batch, all models", registry=registry)
        self.counters = PlainCounters(TEI_COUNTERS)

    def observe(self, seconds: tuple[float, float, float, float], lengths: list[int], single: bool) -> None:
        """A request answered: (total, tokenization, queue, inference) seconds and its inputs' token counts."""
        for histogram, value in zip((self.request_duration, self.tokenization_duration, self.queue_duration,
                                     self.inference_duration), seconds):
            histogram.observe(value)
        for length in lengths:
            self.input_length.observe(length)
        self.counters.inc("te_request_success", "single" if single else "batch")
        self.counters.inc("te_embed_success", amount=len(lengths))


class PlainCounters:
    """Counters with at most one label, rendered in the Prometheus text format under their exact names."""

    def __init__(self, specs: dict[str, tuple[str, str | None]]) -> None:
        self.specs = specs
        self.values: dict[tuple[str, str | None], float] = {}
        self._lock = threading.Lock()

    def inc(self, name: str, label: str | None = None, amount: float = 1.0) -> None:
        with self._lock:
            self.values[(name, label)] = self.values.get((name, label), 0.0) + amount

    def render(self) -> bytes:
        with self._lock:
            values = dict(self.values)
        lines = []
        for name, (doc, label_name) in self.specs.items():
            lines += [f"# HELP {name} {doc}", f"# TYPE {name} counter"]
            for (counted, label), value in sorted(values.items(), key=lambda kv: str(kv[0])):
                if counted == name:
                    labels = f'{{{label_name}="{label}"}}' if label_name and label is not None else ""
                    lines.append(f"{name}{labels} {value:g}")
        return ("\n".join(lines) + "\n").encode()
