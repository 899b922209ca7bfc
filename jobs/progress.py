"""A tqdm bar for the job: documents with rate and ETA, plus tokens/s; silent off a terminal or with --quiet."""

from __future__ import annotations

import sys
import time
from typing import Any


class JobProgress:
    """Counts documents (the bar) and tokens (the postfix); ``enabled=None`` means 'if stderr is a TTY'."""

    def __init__(self, total: int | None, initial: int = 0, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.tokens = 0
        self.started = time.perf_counter()
        self.bar: Any = None
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="doc", unit_scale=True, dynamic_ncols=True,
                            smoothing=0.1, file=sys.stderr, desc="embedding")

    def update(self, docs: int, tokens: int) -> None:
        self.tokens += tokens
        if self.bar is not None:
            rate = self.tokens / max(time.perf_counter() - self.started, 1e-9)
            self.bar.set_postfix_str(f"{rate:,.0f} tok/s", refresh=False)
            self.bar.update(docs)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
