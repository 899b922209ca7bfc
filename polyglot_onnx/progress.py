"""Progress on stderr for long work (export, quantize, drift, bench): step lines for logs, tqdm bars with an ETA
for a person watching a terminal.

Step lines (``[i/n] label ...`` then ``done in 1.2 s``) always print when enabled, so CI logs and redirected
output keep a readable record. Bars (an overall bar over the steps, and per-loop bars such as the drift
checker's batches) appear only when stderr is a terminal: tqdm draws them with carriage returns, which would
litter a log file. tqdm is the bar people know and already a dependency of the export, quantize and jobs
extras; where it is missing (a runtime-only install) there are simply no bars.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO


class _NoBar:
    """What ``Progress.bar`` returns when no bar is drawn: the same calls, doing nothing."""

    def update(self, n: int = 1) -> None:
        return None

    def close(self) -> None:
        return None

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def _tqdm(stream: TextIO, **kwargs: Any) -> Any | None:
    """A tqdm bar on ``stream`` when it is a terminal and tqdm is installed, else None."""
    isatty = getattr(stream, "isatty", None)
    if not (callable(isatty) and isatty()):
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(file=stream, dynamic_ncols=True, **kwargs)


class Progress:
    """Step lines and, on a terminal, bars with ETA; silent when disabled (library use, tests).

    ``nested`` indents the lines of work that runs inside another command's step (the drift check a
    quantize run does) and draws no overall bar of its own.
    """

    def __init__(self, total: int, enabled: bool = True, stream: TextIO | None = None, nested: bool = False,
                 label: str = "") -> None:
        self.total = total
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.index = 0
        self.nested = nested
        self.label = label
        self._overall: Any | None = None

    def _write(self, line: str) -> None:
        text = ("      " + line) if self.nested else line
        if self._overall is not None:
            self._overall.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def info(self, message: str) -> None:
        if self.enabled:
            self._write(f"      {message}")

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        self.index += 1
        start = time.perf_counter()
        if self.enabled:
            if self._overall is None and not self.nested and self.index == 1:
                self._overall = _tqdm(self.stream, total=self.total, desc=self.label or "steps", unit="step",
                                      leave=False)
            self._write(f"[{self.index}/{self.total}] {label} ...")
        yield
        if self.enabled:
            elapsed = time.perf_counter() - start
            self._write(f"      done in {elapsed:.1f} s")
            if self._overall is not None:
                self._overall.update(1)
                if self.index >= self.total:
                    self._overall.close()
                    self._overall = None

    def bar(self, total: int, desc: str, unit: str = "it") -> Any:
        """A bar over one loop of ``total`` items (``update(n)``, usable as a context manager)."""
        if not self.enabled:
            return _NoBar()
        return _tqdm(self.stream, total=total, desc=desc, unit=unit, leave=False) or _NoBar()
