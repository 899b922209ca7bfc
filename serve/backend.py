"""The model behind a served name: the runtime's Embedder (and FillMask on the same session).

Its ``run`` is the batching queue's worker function: one group key, one onnxruntime call. It knows
the runtime, not HTTP.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import numpy as np

from polyglot_onnx.runtime.text import DEFAULT_TEXT_LIMITS
from polyglot_onnx.serve.config import ModelSpec, ServeConfig
from polyglot_onnx.serve.keys import (
    FILL_MASK,
    SENTENCE,
    TOKEN,
    WINDOW,
    WORD,
    BatchKey,
    FillMaskKey,
    SentenceKey,
    TokenKey,
    WindowKey,
    WordKey,
)
from polyglot_onnx.serve.tokens import Tokens

log = logging.getLogger("polyglot_onnx.serve")

WARM_UP_TEXT = "Warm-up text: the server runs it once per output before it reports healthy."


@dataclass(frozen=True)
class WindowPayload:
    """One window of a long text: its ids, the rows of its output the text keeps, whether it is the first."""

    ids: list[int]
    span: tuple[int, int]
    first: bool


@dataclass
class Backend:
    name: str
    directory: str
    embedder: Any  # polyglot_onnx.Embedder
    fill_mask: Any | None  # polyglot_onnx.FillMask sharing the embedder's session, when the package has a head
    tokens: Tokens
    description: dict[str, Any]
    source: str = ""  # the checkpoint's hub id or folder name (TEI's model_id)
    aliases: tuple[str, ...] = ()  # other names a request may use for it (the package's model name)

    @classmethod
    def load(cls, spec: ModelSpec, config: ServeConfig) -> Backend:
        """Open the package with the runtime's integrity checks; errors are the runtime's one-liners."""
        from polyglot_onnx.runtime import Embedder, FillMask

        options = {"self_check": True} if config.self_check else {}
        # memory_arena=False: a long-running server gives memory back after every call (runtime/providers.py)
        embedder = Embedder.load(spec.directory, provider=config.provider, variant=config.variant,
                                 threads=config.threads, verify=config.verify, memory_arena=False, **options)
        engine = embedder.engine
        fill_mask = FillMask(engine) if embedder.model.has_mlm_head else None
        description = embedder.describe()
        source = source_id(str(engine.manifest.model.source)) or str(description["model"])
        name = spec.name or source
        aliases = tuple(dict.fromkeys(a for a in (source, str(description["model"])) if a != name))
        backend = cls(name, spec.directory, embedder, fill_mask, Tokens(engine.text), description, source, aliases)
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
    def compute_type(self) -> str:
        """TEI's x-compute-type: where the model runs."""
        return "gpu" if self.embedder.engine.provider_name == "cuda" else "cpu"

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

    def run(self, key: BatchKey, payloads: list[Any]) -> list[Any]:
        """One onnxruntime call for one group of queued inputs (called in the queue's worker thread)."""
        match key:
            case SentenceKey():
                return list(self.embedder.encode_ids(payloads, output="sentence"))
            case TokenKey():
                return list(self.embedder.encode_ids(payloads, output="token"))
            case WordKey(normalize=normalize, prompt=prompt):  # texts within the maximum (or truncated)
                return list(self.embedder.encode(payloads, batch_size=len(payloads), normalize=normalize,
                                                 output="word", prompt=prompt or ""))
            case WindowKey(pooling=pooling):
                return self._windows(pooling, payloads)
            case FillMaskKey():
                return self._fill_mask(key, payloads)
        raise ValueError(f"unknown batch key {key!r}")

    @property
    def pooled_output(self) -> str:
        """The graph output a sentence vector comes from, for this package's pooling."""
        from polyglot_onnx.runtime.embedder import POOLING_OUTPUTS

        return POOLING_OUTPUTS[self.embedder.model.default_pooling]

    def _windows(self, mode: str, payloads: list[WindowPayload]) -> list[Any]:
        """Each window's share of its text: the rows it owns ('rows'), or its part of the pooled vector."""
        from polyglot_onnx import manifest as mf
        from polyglot_onnx.runtime.long_text import window_part

        vectors = self.embedder.encode_ids([p.ids for p in payloads], output="token")
        if mode == "rows":
            return [np.array(v[p.span[0] : p.span[1]]) for v, p in zip(vectors, payloads)]
        pooled = mf.CLS_EMBEDDING if mode == "cls" else mf.SENTENCE_EMBEDDING
        return [window_part(v, p.span, pooled, p.first) for v, p in zip(vectors, payloads)]

    @property
    def fill_mask_limits(self) -> Any:
        """The runtime's own fill-mask bounds (masks per text / per call, top_k): the server applies the same."""
        from polyglot_onnx.runtime.fill_mask import DEFAULT_LIMITS

        return getattr(self.fill_mask, "limits", DEFAULT_LIMITS)

    def _fill_mask(self, key: FillMaskKey, payloads: list[Any]) -> list[Any]:
        """Payloads are (ids, mask positions) rows (FillMask.plan's); merged requests are run in chunks of at
        most masks_per_call positions, which bounds a vocabulary-wide logits block on the host path."""
        top_k, targets = key.top_k, key.targets
        assert self.fill_mask is not None
        target_ids = np.asarray(targets, dtype=np.int64) if targets is not None else None
        limit = self.fill_mask_limits.masks_per_call
        out: list[Any] = []
        chunk: list[Any] = []
        masks = 0
        for row in [*payloads, None]:
            count = len(row[1]) if row is not None else 0
            if chunk and (row is None or masks + count > limit):
                out += self.fill_mask.predict(chunk, top_k, target_ids, batch_size=len(chunk))
                chunk, masks = [], 0
            if row is not None:
                chunk.append(row)
                masks += count
        return out

    def warm_up(self) -> dict[str, float]:
        """One call per output kind, so the first client does not pay onnxruntime's first-run cost; returns
        the seconds per token each took the second time (the batcher's first estimate of its rates)."""
        ids = self.tokens.encode([WARM_UP_TEXT], "warm-up", truncate=True)[0].ids
        calls: dict[str, tuple[BatchKey, list[Any]]] = {SENTENCE: (SentenceKey(), [ids]), TOKEN: (TokenKey(), [ids])}
        calls[WINDOW] = (WindowKey("rows"), [WindowPayload(ids, (0, len(ids)), True)])
        if self.fill_mask is not None:
            row = ids[:-1] + [self.fill_mask.mask_id] + ids[-1:]  # a mask before the closing special token
            calls[FILL_MASK] = (FillMaskKey(1, None), [(row, [len(ids) - 1])])
        rates = {}
        for kind, (key, payloads) in calls.items():
            self.run(key, payloads)
            started = perf_counter()
            self.run(key, payloads)
            rates[kind] = (perf_counter() - started) / len(ids)
        rates[WORD] = rates[TOKEN]  # the same graph output, pooled per word on the host
        return rates

    def info(self) -> dict[str, Any]:
        """What /info shows for this model: what actually runs, and the evidence for it."""
        d = self.description
        return {
            "name": self.name,
            "model": d.get("model"),
            "source": self.source,
            "architecture": d.get("architecture"),
            "variant": self.variant,
            "provider": self.provider,
            "dimension": self.dimension,
            "max_input_length": self.tokens.max_length,
            "fill_mask": self.fill_mask is not None,
            "mask_token": self.fill_mask.mask_token if self.fill_mask is not None else None,
            "pooling": self.embedder.model.default_pooling,
            "batch_invariant": self.batch_invariant,
            "drift": d.get("drift"),
            "validation": d.get("validation"),
            "limits": {"text": vars(getattr(self.embedder, "limits", None) or DEFAULT_TEXT_LIMITS).copy(),
                       "fill_mask": vars(self.fill_mask_limits).copy()},
        }


def source_id(location: str) -> str:
    """The name a checkpoint is known by: its hub id (``org/name``) as it is, a local folder by its name (a hub
    cache snapshot folder by the repo it caches), so no path of the exporting machine is published."""
    from pathlib import PurePosixPath, PureWindowsPath

    if not location.startswith(("/", "\\", "~", ".")) and not PureWindowsPath(location).drive:
        return location
    parts = PureWindowsPath(location).parts if "\\" in location else PurePosixPath(location).parts
    for part in parts:
        if part.startswith("models--"):  # ~/.cache/huggingface/hub/models--org--name/snapshots/<sha>
            return part[len("models--"):].replace("--", "/")
    return parts[-1] if parts else ""
