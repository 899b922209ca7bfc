"""The model behind a served name: the runtime's Embedder (and FillMask on the same session).

Its ``run`` is the batching queue's worker function: one group key, one onnxruntime call. It knows
the runtime, not HTTP.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from polyglot_onnx.serve.config import ModelSpec, ServeConfig
from polyglot_onnx.serve.tokens import Tokens

log = logging.getLogger("polyglot_onnx.serve")

SENTENCE = "sentence"
TOKEN = "token"
WORD = "word"
FILL_MASK = "fill-mask"
WHOLE = "whole"  # a text over the model maximum, read whole as overlapping windows by Embedder.encode
WARM_UP_TEXT = "Warm-up text: the server runs it once per output before it reports healthy."


@dataclass
class Backend:
    name: str
    directory: str
    embedder: Any  # polyglot_onnx.Embedder
    fill_mask: Any | None  # polyglot_onnx.FillMask sharing the embedder's session, when the package has a head
    tokens: Tokens
    description: dict[str, Any]

    @classmethod
    def load(cls, spec: ModelSpec, config: ServeConfig) -> Backend:
        """Open the package with the runtime's integrity checks; errors are the runtime's one-liners."""
        from polyglot_onnx.runtime import Embedder, FillMask

        options = {"self_check": True} if config.self_check else {}
        embedder = Embedder.load(spec.directory, provider=config.provider, variant=config.variant,
                                 threads=config.threads, verify=config.verify, **options)
        engine = embedder.engine
        fill_mask = FillMask(engine) if engine.manifest.model.has_mlm_head else None
        description = embedder.describe()
        name = spec.name or description["model"]
        backend = cls(name, spec.directory, embedder, fill_mask, Tokens(engine.text), description)
        if backend.batch_invariant is False:
            log.warning(
                "model %s: variant %s is not batch-invariant: a text's vector depends slightly on what it is "
                "batched with; serve a batch-invariant variant (--variant) for reproducible vectors",
                name, backend.variant,
            )
        return backend

    @property
    def variant(self) -> str:
        return str(self.embedder.variant)

    @property
    def provider(self) -> str:
        return str(self.embedder.provider)

    @property
    def dimension(self) -> int:
        return int(self.embedder.dimension)

    @property
    def pad_multiple(self) -> int:
        return int(getattr(self.embedder.engine.text, "pad_to_multiple", 1))

    @property
    def batch_invariant(self) -> bool | None:
        """What the package says (describe(), else the variant's manifest extra); None when it does not say."""
        said = self.description.get("batch_invariant")
        if said is None:
            said = self.embedder.engine.package.variant.extra.get("batch_invariant")
        return None if said is None else bool(said)

    def run(self, key: Hashable, payloads: list[Any]) -> list[Any]:
        """One onnxruntime call for one group of queued inputs (called in the queue's worker thread)."""
        kind = key[0]  # type: ignore[index]
        if kind == SENTENCE:
            return list(self.embedder.encode_ids(payloads, output="sentence"))
        if kind == TOKEN:
            return list(self.embedder.encode_ids(payloads, output="token"))
        if kind == WORD:  # key: (WORD, normalize, prompt, long_text, window_stride)
            _, normalize, prompt, long_text, stride = key  # type: ignore[misc]
            return list(self.embedder.encode(payloads, batch_size=len(payloads), normalize=normalize, output="word",
                                             prompt=prompt or "", long_text=long_text, window_stride=stride))
        if kind == WHOLE:  # key: (WHOLE, output, prompt, window_stride); unnormalized, as encode_ids
            _, output, prompt, stride = key  # type: ignore[misc]
            out = self.embedder.encode(payloads, normalize=False, output=output,  # windows in the default batches
                                       prompt=prompt or "", long_text="window", window_stride=stride)
            return list(out) if output == SENTENCE else [r.embeddings for r in out]
        if kind == FILL_MASK:
            return self._fill_mask(key, payloads)
        raise ValueError(f"unknown batch kind {kind!r}")

    @property
    def fill_mask_limits(self) -> Any:
        """The runtime's own fill-mask bounds (masks per text / per call, top_k): the server applies the same."""
        from polyglot_onnx.runtime.fill_mask import DEFAULT_LIMITS

        return getattr(self.fill_mask, "limits", DEFAULT_LIMITS)

    def _fill_mask(self, key: Hashable, payloads: list[Any]) -> list[Any]:
        """Payloads are (text, mask count); requests merged by the queue stay within masks_per_call."""
        _, top_k, targets = key  # type: ignore[misc]
        assert self.fill_mask is not None
        limit = self.fill_mask_limits.masks_per_call
        out: list[Any] = []
        chunk: list[str] = []
        masks = 0
        for text, count in [*payloads, (None, 0)]:
            if chunk and (text is None or masks + count > limit):
                out += self.fill_mask(chunk, top_k=top_k, targets=list(targets) if targets else None,
                                      batch_size=len(chunk))
                chunk, masks = [], 0
            if text is not None:
                chunk.append(text)
                masks += count
        return out

    def warm_up(self) -> None:
        """One call per output kind, so the first client does not pay onnxruntime's first-run cost."""
        ids = self.tokens.encode([WARM_UP_TEXT], "warm-up", truncate=True)[0].ids
        self.run((SENTENCE,), [ids])
        self.run((TOKEN,), [ids])
        if self.fill_mask is not None:
            self.run((FILL_MASK, 1, None), [(f"{WARM_UP_TEXT} {self.fill_mask.mask_token}", 1)])

    def info(self) -> dict[str, Any]:
        """What /info shows for this model: what actually runs, and the evidence for it."""
        d = self.description
        return {
            "name": self.name,
            "model": d.get("model"),
            "architecture": d.get("architecture"),
            "variant": self.variant,
            "provider": self.provider,
            "dimension": self.dimension,
            "max_input_length": self.tokens.max_length,
            "fill_mask": self.fill_mask is not None,
            "mask_token": self.fill_mask.mask_token if self.fill_mask is not None else None,
            "pooling": self.embedder.engine.manifest.model.default_pooling,
            "batch_invariant": self.batch_invariant,
            "drift": d.get("drift"),
            "validation": d.get("validation"),
        }
