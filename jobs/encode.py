"""One chunk of texts -> vectors, token counts and truncation flags, in token-budget batches.

Each chunk is tokenized once with the public ``Embedder.tokenize``; the counts size the batches and
fill the ``n_tokens`` / ``truncated`` columns, and each batch is a ``select`` of the same encodings
embedded by ``Embedder.encode_tokenized`` -- the two halves of ``Embedder.encode``, so every runtime
option (pooling, normalization, prompts, long-text windows) behaves exactly as in-process. Tokenizing
twice (once to count, once inside ``encode``) cost the job 0.64x of the in-process speed on the 2-layer
test model (benchmarks/README.md, "Corpus embedding job").
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from polyglot_onnx.errors import TruncationWarning
from polyglot_onnx.jobs.options import JobOptions
from polyglot_onnx.runtime import sentence_options
from polyglot_onnx.runtime import text as runtime_text


@dataclass
class Encoded:
    """Per good text: a [hidden] vector (sentence) or a record with .embeddings (token / word)."""

    vectors: Any  # np.ndarray [n, hidden] for sentence, else list of TokenEmbeddings / WordEmbeddings
    n_tokens: np.ndarray  # int32 [n]
    truncated: np.ndarray  # bool [n]
    provider: str | None = None  # the execution provider(s) that ran the graph: recorded in each shard


def vector_width(embedder: Any, output: str, dimensions: int | None = None) -> int:
    """Sentence vectors may be narrower than the encoder (a Dense projection, or Matryoshka ``dimensions``);
    token and word vectors never are."""
    if output != "sentence":
        return int(embedder.model.hidden_size)
    return int(dimensions or embedder.dimension)


class ChunkEncoder:
    """Binds an Embedder to the job's options; ``encode`` runs one chunk."""

    def __init__(self, embedder: Any, options: JobOptions) -> None:
        self.embedder = embedder
        self.options = options
        self.pooling = options.pooling or embedder.model.default_pooling
        self.max_batch_tokens = options.batch_tokens(embedder.model.hidden_size)
        self.kwargs: dict[str, Any] = {"normalize": options.normalize, "output": options.output}
        if options.output == "sentence":
            self.kwargs["pooling"] = self.pooling
        # The prompt is resolved once (explicit, named or the package default) and handed to encode as text,
        # so the token counts below include it, as the model sees it.
        model = embedder.model
        self.prompt = sentence_options.resolve_prompt(model, options.prompt_name, options.prompt) or None
        if options.dimensions is not None:
            sentence_options.check_dimensions(options.dimensions, vector_width(embedder, "sentence"))
            self.kwargs["dimensions"] = options.dimensions

    def tokenize(self, texts: list[str]) -> Any:
        """Each text tokenized once (prompt included, as the model sees it): the counts size the batches
        and fill n_tokens / truncated, and the same encodings are embedded."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncationWarning)
            return self.embedder.tokenize(texts, long_text=self.options.long_text, prompt=self.prompt or "")

    def encode(self, texts: list[str], on_batch: Callable[[int, int], None] | None = None) -> Encoded:
        """Longest-first batches under ``max_batch_tokens`` (rows x padded length); results in input order."""
        if not texts:  # a chunk of bad rows only
            width = vector_width(self.embedder, self.options.output, self.options.dimensions)
            empty: Any = np.zeros((0, width), np.float32) if self.options.output == "sentence" else []
            return Encoded(empty, np.zeros(0, np.int32), np.zeros(0, bool), self.embedder.provider)
        tokenized = self.tokenize(texts)
        n_tokens, truncated = tokenized.token_counts()
        max_rows = getattr(runtime_text, "MAX_BATCH_SIZE", None)  # Embedder.encode's own bound on batch_size
        batches = runtime_text.token_budget_batches([int(n) for n in n_tokens], self.max_batch_tokens, max_rows)
        vectors: Any = None if self.options.output == "sentence" else [None] * len(texts)
        for batch in batches:
            out = self.embedder.encode_tokenized(tokenized.select(batch), batch_size=len(batch), **self.kwargs)
            if self.options.output == "sentence":
                if vectors is None:
                    vectors = np.empty((len(texts), out.shape[1]), dtype=np.float32)
                vectors[batch] = out
            else:
                for i, record in zip(batch, out):
                    vectors[i] = record
            if on_batch:
                on_batch(len(batch), int(n_tokens[batch].sum()))
        return Encoded(vectors, n_tokens, truncated, self.embedder.provider)
