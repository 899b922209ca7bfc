"""Server configuration: one frozen dataclass the CLI, ``create_app`` and the Ray deployment share."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from polyglot_onnx.errors import InputError
from polyglot_onnx.runtime.providers import check_threads

API_KEY_ENV = "POLYGLOT_API_KEY"
CONFIG_ENV = "POLYGLOT_SERVE_CONFIG"  # JSON config for worker processes started by uvicorn's --workers


@dataclass(frozen=True)
class ModelSpec:
    """A package directory and the name clients use for it (default: its checkpoint's hub id or folder name)."""

    directory: str
    name: str | None = None


@dataclass(frozen=True)
class ServeConfig:
    models: tuple[ModelSpec, ...]
    provider: str = "auto"
    variant: str = "auto"
    threads: int | None = None
    max_batch_tokens: int = 16384  # padded length x rows of one onnxruntime call
    max_batch_rows: int | None = None  # 1 = no dynamic batching (for comparisons)
    max_client_batch_size: int = 32
    max_concurrent_requests: int = 512
    auto_truncate: bool = True
    payload_limit: int = 2_000_000  # bytes of request body
    api_key: str | None = field(default=None, repr=False)
    drain_timeout: float = 30.0  # seconds SIGTERM waits for in-flight requests; later ones get 503
    verify: bool = True  # sha256 of every package file at start-up
    self_check: bool = False  # re-run the variant on the package's canary texts at start-up (docs/quantize.md "verify")
    # Per-request caps, checked before any model work (413 naming the cap):
    max_request_tokens: int = 262_144  # tokens of model work (a long text's windows at full length)
    max_response_bytes: int = 100_000_000  # estimated size of the JSON answer
    # A batch is cut to about this much measured work, so a small request never waits long (0: tokens only)
    max_batch_ms: float = 100.0
    # Slow clients (0: no limit): seconds to send the headers, then the body; connections per client address
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections_per_address: int = 128
    # An unknown `model` on the OpenAI routes: answered by the first model with a warning (as TEI), or a 404
    strict_model_name: bool = False

    def __post_init__(self) -> None:
        if not self.models:
            raise InputError("no package to serve: pass at least one package directory")
        for name, value in (
            ("max_batch_tokens", self.max_batch_tokens),
            ("max_client_batch_size", self.max_client_batch_size),
            ("max_concurrent_requests", self.max_concurrent_requests),
            ("payload_limit", self.payload_limit),
            ("max_request_tokens", self.max_request_tokens),
            ("max_response_bytes", self.max_response_bytes),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.max_connections_per_address, int) or self.max_connections_per_address < 0:
            raise InputError("max_connections_per_address must be a non-negative integer (0: no limit), got "
                             f"{self.max_connections_per_address!r}")
        for name, seconds in (("drain_timeout", self.drain_timeout), ("max_batch_ms", self.max_batch_ms),
                              ("header_timeout", self.header_timeout), ("body_timeout", self.body_timeout)):
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < 1e9:
                raise InputError(f"{name} must be a non-negative number, got {seconds!r}")
        if self.max_batch_rows is not None and self.max_batch_rows < 1:
            raise InputError(f"max_batch_rows must be a positive integer, got {self.max_batch_rows!r}")
        check_threads(self.threads)

    def with_threads(self, threads: int | None) -> ServeConfig:
        return replace(self, threads=threads)

    def to_json(self) -> str:
        """For worker processes; the API key travels in its own environment variable, not here."""
        data = asdict(self)
        data["api_key"] = None
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        data: dict[str, Any] = json.loads(text)
        data["models"] = tuple(ModelSpec(**m) for m in data["models"])
        data["api_key"] = os.environ.get(API_KEY_ENV) or None
        return cls(**data)


def parse_models(directories: list[str], names: list[str]) -> tuple[ModelSpec, ...]:
    """Plain DIRs plus ``--name NAME=DIR`` pairs; a named DIR that is also listed plainly is served once."""
    named: dict[str, str] = {}
    for item in names:
        name, sep, directory = item.partition("=")
        if not sep or not name.strip() or not directory.strip():
            raise InputError(f"--name {item!r} is not NAME=DIR: e.g. --name mbert=packages/mbert-cased")
        named[str(Path(directory.strip()).expanduser().resolve())] = name.strip()
    specs: list[ModelSpec] = []
    seen: set[str] = set()
    for directory in [*directories, *[d for d in named if d not in {_key(x) for x in directories}]]:
        key = _key(directory)
        if key in seen:
            continue
        seen.add(key)
        specs.append(ModelSpec(directory=directory, name=named.get(key)))
    return tuple(specs)


def _key(directory: str) -> str:
    return str(Path(directory).expanduser().resolve())
