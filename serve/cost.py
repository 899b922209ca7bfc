"""A request's cost, known before it runs: tokens of model work and the size of its answer.

Each route computes its cost from the tokenized request (a long text counts every window at full
length, a long document's fill-mask every mask's window) and checks it against the per-request caps
before anything is queued; over a cap is a 413 that names the cap and the way to stay under it.
"""

from __future__ import annotations

from dataclasses import dataclass

from polyglot_onnx.serve.config import ServeConfig
from polyglot_onnx.serve.errors import Kind, ServeError

# A float32 in a JSON answer, with its separator: "-0.012345678918766975," is 22 characters, most are 20.
BYTES_PER_FLOAT = 20
# One /tokenize token object without its text: {"id":123456,"text":"","special":false,"start":123456,"stop":123457},
BYTES_PER_TOKEN = 80
# One fill-mask prediction without its sequence: {"score":...,"token":...,"token_str":"...","sequence":""},
BYTES_PER_PREDICTION = 100


@dataclass(frozen=True)
class Cost:
    """Tokens the model computes (padding aside) and the estimated bytes of the JSON answer."""

    tokens: int
    response_bytes: int

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.tokens + other.tokens, self.response_bytes + other.response_bytes)


def vectors(rows: int, width: int) -> int:
    """Bytes of ``rows`` JSON vectors of ``width`` floats."""
    return rows * (width * BYTES_PER_FLOAT + 2)


def check(cost: Cost, config: ServeConfig, field: str = "inputs") -> None:
    """413 naming the first cap the request passes."""
    if cost.tokens > config.max_request_tokens:
        raise ServeError(
            Kind.PAYLOAD,
            f"this request needs {cost.tokens} tokens of model work (long texts count every window), over the "
            f"limit of {config.max_request_tokens} per request (--max-request-tokens): send fewer or shorter "
            "inputs, or a larger window_stride",
            code="request_too_expensive",
            param=field,
        )
    if cost.response_bytes > config.max_response_bytes:
        raise ServeError(
            Kind.PAYLOAD,
            f"the answer to this request would be about {cost.response_bytes} bytes, over the limit of "
            f"{config.max_response_bytes} per request (--max-response-bytes): send fewer or shorter inputs "
            "(or fewer masks / a lower top_k)",
            code="response_too_large",
            param=field,
        )
