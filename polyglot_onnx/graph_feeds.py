"""The graph's inputs, fed one way by every stage that runs a package graph.

A package graph declares its inputs in manifest.json; optional ones (the masked-LM head's mask positions, the
in-graph top k) exist only in some packages. Export validation, the quantize stage's checks and the runtime
all build their feeds here, so an input added to the graph interface is one edit, not five.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from polyglot_onnx import manifest as mf

NO_POSITIONS = np.zeros(0, dtype=np.int64)


def graph_feeds(
    inputs: Sequence[str],
    ids: np.ndarray,
    mask: np.ndarray,
    positions: np.ndarray | None = None,
    top_k: int = 5,
) -> dict[str, np.ndarray]:
    """Feeds for a graph declaring ``inputs``: no positions gives a zero-row LM head (embedding calls skip it)."""
    feeds = {mf.INPUT_IDS: ids, mf.ATTENTION_MASK: mask}
    if mf.MASK_POSITIONS in inputs:
        feeds[mf.MASK_POSITIONS] = NO_POSITIONS if positions is None else positions
    if mf.MASK_TOP_K in inputs:
        feeds[mf.MASK_TOP_K] = np.array([top_k], dtype=np.int64)
    return feeds
