"""Corpus jobs: embed a whole corpus into Parquet shards, resumable, on this machine or on Ray Data.

Needs the ``jobs`` extra (pyarrow, tqdm); ``--engine ray`` also the ``ray`` extra. The runtime never
imports this package, and importing it loads nothing heavy until ``embed_corpus`` is used.
"""

from __future__ import annotations

from typing import Any

from polyglot_onnx.jobs.options import JobOptions

__all__ = ["JobOptions", "embed_corpus"]


def embed_corpus(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """See ``polyglot_onnx.jobs.job.embed_corpus``: imported on first use to keep the CLI's start fast."""
    from polyglot_onnx.jobs.job import embed_corpus as run

    return run(*args, **kwargs)
