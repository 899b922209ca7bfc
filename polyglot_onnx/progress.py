"""Stage-by-stage progress on stderr for long work (export, later quantize and drift)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class Progress:
    """Prints ``[i/n] label ... done (1.2 s)`` lines; silent when disabled (library use, tests)."""

    def __init__(self, total: int, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.total = total
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.index = 0

    def info(self, message: str) -> None:
        if self.enabled:
            print(f"      {message}", file=self.stream, flush=True)

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        self.index += 1
        start = time.perf_counter()
        if self.enabled:
            print(f"[{self.index}/{self.total}] {label} ...", file=self.stream, flush=True)
        yield
        if self.enabled:
            elapsed = time.perf_counter() - start
            print(f"      done in {elapsed:.1f} s", file=self.stream, flush=True)
