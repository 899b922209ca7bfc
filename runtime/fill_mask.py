"""FillMask: the transformers fill-mask pipeline's output, computed by the ONNX package."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from polyglot_onnx import manifest as mf
from polyglot_onnx.errors import InputError, PolyglotError
from polyglot_onnx.runtime.engine import Engine, EngineClient
from polyglot_onnx.runtime.long_text import mask_rows, whole_documents
from polyglot_onnx.runtime.text import as_text_list, length_sorted_batches, pad_ids

log = logging.getLogger("polyglot_onnx")

Prediction = dict[str, Any]  # {"score", "token", "token_str", "sequence"}
Best = tuple[np.ndarray, np.ndarray]  # one mask's (scores, token ids), best first


@dataclass(frozen=True)
class FillMaskLimits:
    """Per-call bounds (README "Limits"); the server passes the same object.

    Each mask costs a vocabulary-wide logits row and ``top_k`` decoded sequences, so an input made of
    thousands of masks would cost seconds and gigabytes; these bounds keep one call's cost small.
    """

    masks_per_text: int = 32
    masks_per_call: int = 256
    top_k: int = 100

    def __post_init__(self) -> None:
        for name in ("masks_per_text", "masks_per_call", "top_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"FillMaskLimits.{name} must be a positive integer, got {value!r}")


DEFAULT_LIMITS = FillMaskLimits()


class FillMask(EngineClient):
    """Predicts the model's own mask token ([MASK] for mBERT, <mask> for mmBERT)."""

    def __init__(self, engine: Engine, limits: FillMaskLimits = DEFAULT_LIMITS) -> None:
        if not engine.manifest.model.has_mlm_head:
            raise PolyglotError(
                f"{engine.manifest.model.name} was exported without a masked-LM head (embedding-only "
                "package): use Embedder, or export a *ForMaskedLM checkpoint for fill-mask"
            )
        super().__init__(engine)
        self.limits = limits
        self.mask_token: str = engine.manifest.tokenizer.mask_token or ""
        self.mask_id: int = int(engine.manifest.tokenizer.mask_token_id or 0)

    def __call__(
        self,
        inputs: str | Sequence[str],
        top_k: int = 5,
        targets: str | Sequence[str] | None = None,
        batch_size: int = 32,
    ) -> list[Any]:
        texts, single = as_text_list(inputs, "inputs")
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= self.limits.top_k:
            raise InputError(f"top_k must be an integer from 1 to {self.limits.top_k}, got {top_k!r}")
        target_ids = self._target_ids(targets) if targets is not None else None
        # A text over the maximum is read whole; each of its masks gets a window centred on it.
        encodings = whole_documents(self.engine.text.encode(texts, truncating=False), self.engine.text.tokenizer)
        masks = self._masks(encodings)
        rows = mask_rows(encodings, masks, self.engine.text.max_length)
        best_of: dict[tuple[int, int], Best] = {}
        for batch in length_sorted_batches([len(r[0]) for r in rows], batch_size):
            ids, attn = pad_ids([rows[r][0] for r in batch], self.engine.text.info.pad_token_id,
                                self.engine.text.pad_to_multiple)
            width = ids.shape[1]
            positions = np.asarray([row * width + p for row, r in enumerate(batch) for p in rows[r][1]], np.int64)
            slots = [slot for r in batch for slot in rows[r][2]]
            best_of.update(zip(slots, self._best(ids, attn, positions, [i for i, _ in slots], top_k, target_ids)))
        results: list[Any] = []
        for i, enc in enumerate(encodings):
            picked = [best_of[(i, k)] for k in range(len(masks[i]))]
            results.append(self._format(enc.ids, masks[i], picked))
        return results[0] if single else results

    def _best(
        self,
        ids: np.ndarray,
        attn: np.ndarray,
        positions: np.ndarray,
        owners: list[int],
        top_k: int,
        target_ids: np.ndarray | None,
    ) -> list[Best]:
        """(scores, token ids) of each mask row, best first: from the graph's own top k where the package has
        one (export/topk.py: nothing vocabulary-wide reaches the host), else from the logits (older packages,
        and ``targets``, which score exactly the words asked for)."""
        if target_ids is None and self.engine.top_k_in_graph:
            scores, tokens = self.engine.run([mf.MASK_TOP_SCORES, mf.MASK_TOP_IDS], ids, attn, positions, top_k)
            self.engine.ensure_finite(scores, owners)
            return list(zip(scores.astype(np.float64), tokens))
        (logits,) = self.engine.run([mf.MASK_LOGITS], ids, attn, positions)
        self.engine.ensure_finite(logits, owners)
        return [_host_top_k(row, top_k, target_ids) for row in logits]

    def _masks(self, encodings: list[Any]) -> list[np.ndarray]:
        """Mask positions per input, within the limits (checked before the graph runs)."""
        masks = [np.flatnonzero(np.asarray(e.ids) == self.mask_id) for e in encodings]
        for i, found in enumerate(masks):
            if not found.size:
                hint = " (it may have been truncated away)" if encodings[i].overflowing else ""
                raise InputError(
                    f"input {i} has no {self.mask_token} token{hint}: put {self.mask_token} where the word to predict goes"
                )
            if found.size > self.limits.masks_per_text:
                raise InputError(
                    f"input {i} has {found.size} {self.mask_token} tokens, over the limit of "
                    f"{self.limits.masks_per_text} per text: split it (or raise FillMaskLimits.masks_per_text)"
                )
        total = sum(m.size for m in masks)
        if total > self.limits.masks_per_call:
            raise InputError(
                f"the inputs hold {total} {self.mask_token} tokens, over the limit of {self.limits.masks_per_call} "
                "per call: pass fewer inputs per call (or raise FillMaskLimits.masks_per_call)"
            )
        return masks

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"limits": vars(self.limits).copy()}

    def _format(self, ids: list[int], positions: np.ndarray, best: list[Best]) -> Any:
        single_mask = len(positions) == 1
        per_mask = []
        for pos, (scores, tokens) in zip(positions, best):
            preds = []
            for score, token_id in zip(scores, tokens):
                token = int(token_id)
                filled = list(ids)
                filled[int(pos)] = token
                preds.append(
                    {
                        "score": float(score),
                        "token": token,
                        "token_str": self.engine.text.decode([token], skip_special_tokens=False),
                        # as the transformers pipeline: other masks stay visible when there are several
                        "sequence": self.engine.text.decode(filled, skip_special_tokens=single_mask),
                    }
                )
            per_mask.append(preds)
        return per_mask[0] if single_mask else per_mask

    def _target_ids(self, targets: str | Sequence[str]) -> np.ndarray:
        """Vocabulary ids of ``targets``; a word outside the vocab is replaced by its first piece."""
        words, _ = as_text_list(targets, "targets")
        tok = self.engine.text.tokenizer
        ids: dict[int, None] = {}  # ordered and O(1) per target: no quadratic dedupe on long target lists
        for word in words:
            tid = tok.token_to_id(word)
            if tid is None:
                pieces = tok.encode(word, add_special_tokens=False).ids
                if not pieces:  # logged, as the transformers pipeline does: warnings would pile up per word
                    log.warning("target %r produces no tokens; it is ignored", word[:80])
                    continue
                tid = pieces[0]
                log.warning(
                    "target %r is not in the vocabulary; scoring its first piece %r", word[:80], tok.id_to_token(tid)
                )
            ids[tid] = None
        if not ids:
            raise InputError("none of the targets maps to a vocabulary token: pass words the model knows")
        return np.fromiter(ids, dtype=np.int64, count=len(ids))


def _host_top_k(row: np.ndarray, top_k: int, target_ids: np.ndarray | None) -> Best:
    """Softmax over the whole row in float64, then the best ``top_k`` of ``target_ids`` (or of the vocabulary)."""
    probs = _softmax(row)
    candidates = target_ids if target_ids is not None else np.arange(probs.shape[0])
    scores = probs[candidates] if target_ids is not None else probs
    k = min(top_k, len(candidates))
    best = np.argpartition(-scores, k - 1)[:k]
    best = best[np.argsort(-scores[best], kind="stable")]
    return scores[best], candidates[best]


def _softmax(row: np.ndarray) -> np.ndarray:
    shifted = row.astype(np.float64) - row.max()
    exp = np.exp(shifted)
    return exp / exp.sum()
