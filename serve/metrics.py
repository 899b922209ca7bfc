"""Prometheus metrics, one registry per app (several apps in one process do not collide)."""

from __future__ import annotations

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

    def observe_batch(self, model: str, report: Any) -> None:
        self.batch_size.labels(model).observe(report.rows)
        self.batch_tokens.labels(model).observe(report.padded_tokens)
        self.inference_seconds.labels(model).observe(report.inference_seconds)
        for waited in report.queue_seconds:
            self.queue_seconds.labels(model).observe(waited)
        if report.failed:
            self.batch_failures.labels(model).inc()
        else:
            self.tokens.labels(model).inc(report.tokens)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
