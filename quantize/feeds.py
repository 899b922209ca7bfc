"""CPU sessions over in-memory graphs, and corpus batches fed to them (calibration, sensitivity)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from polyglot_onnx import manifest as mf
from polyglot_onnx.graph_feeds import graph_feeds
from polyglot_onnx.quantize.corpus import load_corpus


def cpu_session(model: Any, threads: int | None = None) -> Any:
    """An onnxruntime CPU session for a ModelProto (or a path), quiet, with full optimisation."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    source = str(model) if isinstance(model, (str, Path)) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def corpus_feeds(
    root: Path,
    manifest: mf.Manifest,
    corpus: str | None,
    per_language: int,
    batch: int,
    mask_row_token: bool,
    minimum: int = 0,
) -> list[dict[str, np.ndarray]]:
    """Padded batches of corpus text, tokenized by the package's own tokenizer.

    ``mask_row_token``: one head position per row (token 1), so static calibration sees the
    masked-LM head; otherwise an empty position list, so the head runs on zero rows.
    """
    from polyglot_onnx.runtime.engine import load_engine

    engine = load_engine(root, "cpu", "fp32", verify=False)
    texts = [s.text for s in load_corpus(corpus).subset(per_language, minimum=minimum).samples]
    feeds = []
    for start in range(0, len(texts), batch):
        ids, mask = engine.text.pad(engine.text.encode(texts[start : start + batch]))
        rows = np.arange(ids.shape[0], dtype=np.int64) * ids.shape[1] + 1
        feeds.append(graph_feeds(manifest.inputs, ids, mask, rows if mask_row_token else None))
    return feeds
