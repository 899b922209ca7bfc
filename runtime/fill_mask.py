"""FillMask: the transformers fill-mask pipeline's output, computed by the ONNX package."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from polyglot_onnx import manifest as mf
from polyglot_onnx.errors import InputError, PolyglotError
from polyglot_onnx.runtime.engine import Engine, EngineClient
from polyglot_onnx.runtime.text import as_text_list, length_sorted_batches

Prediction = dict[str, Any]  # {"score", "token", "token_str", "sequence"}


class FillMask(EngineClient):
    """Predicts the model's own mask token ([MASK] for mBERT, <mask> for mmBERT)."""

    def __init__(self, engine: Engine) -> None:
        if not engine.manifest.model.has_mlm_head:
            raise PolyglotError(
                f"{engine.manifest.model.name} was exported without a masked-LM head (embedding-only "
                "package): use Embedder, or export a *ForMaskedLM checkpoint for fill-mask"
            )
        super().__init__(engine)
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
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise InputError(f"top_k must be a positive integer, got {top_k!r}")
        target_ids = self._target_ids(targets) if targets is not None else None
        encodings = self.engine.text.encode(texts)
        masks = [np.flatnonzero(np.asarray(e.ids) == self.mask_id) for e in encodings]
        for i, found in enumerate(masks):
            if not found.size:
                hint = " (it may have been truncated away)" if encodings[i].overflowing else ""
                raise InputError(
                    f"input {i} has no {self.mask_token} token{hint}: put {self.mask_token} where the word to predict goes"
                )
        results: list[Any] = [None] * len(texts)
        for batch in length_sorted_batches([len(e.ids) for e in encodings], batch_size):
            ids, attn = self.engine.text.pad([encodings[i] for i in batch])
            width = ids.shape[1]
            positions = np.concatenate([row * width + masks[i] for row, i in enumerate(batch)]).astype(np.int64)
            (logits,) = self.engine.run([mf.MASK_LOGITS], ids, attn, positions)
            start = 0
            for i in batch:
                rows = logits[start : start + len(masks[i])]
                start += len(masks[i])
                results[i] = self._format(encodings[i].ids, masks[i], rows, top_k, target_ids)
        return results[0] if single else results

    def _format(
        self, ids: list[int], positions: np.ndarray, logits: np.ndarray, top_k: int, target_ids: np.ndarray | None
    ) -> Any:
        single_mask = len(positions) == 1
        per_mask = []
        for pos, row in zip(positions, logits):
            probs = _softmax(row)
            if target_ids is not None:
                candidates = target_ids
                scores = probs[candidates]
            else:
                candidates = np.arange(probs.shape[0])
                scores = probs
            k = min(top_k, len(candidates))
            best = np.argpartition(-scores, k - 1)[:k]
            best = best[np.argsort(-scores[best], kind="stable")]
            preds = []
            for j in best:
                token = int(candidates[j])
                filled = list(ids)
                filled[int(pos)] = token
                preds.append(
                    {
                        "score": float(scores[j]),
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
        ids: list[int] = []
        for word in words:
            tid = tok.token_to_id(word)
            if tid is None:
                pieces = tok.encode(word, add_special_tokens=False).ids
                if not pieces:
                    warnings.warn(f"target {word!r} produces no tokens; it is ignored", stacklevel=3)
                    continue
                tid = pieces[0]
                warnings.warn(
                    f"target {word!r} is not in the vocabulary; scoring its first piece {tok.id_to_token(tid)!r}",
                    stacklevel=3,
                )
            if tid not in ids:
                ids.append(tid)
        if not ids:
            raise InputError("none of the targets maps to a vocabulary token: pass words the model knows")
        return np.asarray(ids, dtype=np.int64)


def _softmax(row: np.ndarray) -> np.ndarray:
    shifted = row.astype(np.float64) - row.max()
    exp = np.exp(shifted)
    return exp / exp.sum()
