"""Give memory back after large requests: glibc keeps freed heap pages in its arenas otherwise.

A 2 MB request tokenized and answered leaves tens of megabytes of freed chunks spread over the
allocator's per-thread arenas; RSS then settles gigabytes above what the process uses. Fewer arenas
(``mallopt(M_ARENA_MAX)``, set at start-up before the worker threads exist) and ``malloc_trim(0)``
after a large request return those pages to the system. Elsewhere than glibc both are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from time import monotonic
from typing import Any

log = logging.getLogger("polyglot_onnx.serve")

M_ARENA_MAX = -8  # glibc's mallopt parameter
ARENAS = 2
LARGE_REQUEST = 256 * 1024  # bytes of request body or answer after which the heap is trimmed
TRIM_INTERVAL = 1.0  # seconds: at most one trim this often (a trim walks the whole heap)


def _libc() -> Any | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


class Trimmer:
    """Trims the heap after large requests: at most once per TRIM_INTERVAL, always once after the last one,
    in a thread (a trim walks the whole heap)."""

    def __init__(self) -> None:
        self.libc = _libc()
        self._last = 0.0
        self._pending = False
        self.trims = 0

    def limit_arenas(self) -> None:
        if self.libc is not None:
            self.libc.mallopt(M_ARENA_MAX, ARENAS)

    async def after(self, size: int) -> None:
        """Called once a request is answered (``size``: its body or answer, the larger); trims when it was large
        (one trim covers a burst of them)."""
        import asyncio

        if self.libc is None or size < LARGE_REQUEST or self._pending:
            return
        self._pending = True
        try:
            await asyncio.sleep(max(0.0, self._last + TRIM_INTERVAL - monotonic()))
            await asyncio.to_thread(self.trim)
        finally:
            self._last = monotonic()
            self._pending = False

    def trim(self) -> None:
        if self.libc is not None:
            self.libc.malloc_trim(0)
            self.trims += 1
