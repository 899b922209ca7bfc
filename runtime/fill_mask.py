"""FillMask: the transformers fill-mask pipeline's output, computed by the ONNX package."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from polyglot_onnx import manifest as mf
from polyglot_onnx.errors import InputError, PolyglotError
from polyglot_onnx.runtime.client import EngineClient
from polyglot_onnx.runtime.engine import Engine
from polyglot_onnx.runtime.long_text import MaskRow, mask_rows, read_whole
from polyglot_onnx.runtime.text import as_text_list, length_sorted_batches, pad_ids

log = logging.getLogger("polyglot_onnx")

Prediction = dict[str, Any]  # {"score", "token", "token_str", "sequence"}
Best = tuple[np.ndarray, np.ndarray]  # one mask's (scores, token ids), best first


@dataclass(frozen=True)
class FillMaskLimits:
    """Per-call bounds (docs/package-format.md "Limits"); the server passes the same object.

    Each mask costs a vocabulary-wide logits row and ``top_k`` decoded sequences, so an input made of
    thousands of masks would cost seconds and gigabytes; these bounds keep one call's cost small.
    ``sequence_chars`` bounds the characters of the ``sequence`` strings one call returns (each
    prediction repeats its text: top_k x masks x text length), checked before the graph runs.
    """

    masks_per_text: int = 32
    masks_per_call: int = 256
    top_k: int = 100
    sequence_chars: int = 10_000_000

    def __post_init__(self) -> None:
        for name in ("masks_per_text", "masks_per_call", "top_k", "sequence_chars"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"FillMaskLimits.{name} must be a positive integer, got {value!r}")


DEFAULT_LIMITS = FillMaskLimits()
# Unknown targets named in the one warning a call logs about them.
TARGET_EXAMPLES = 3


@dataclass(frozen=True)
class MaskPlan:
    """One call's work, decided (and checked against the limits) before the graph runs.

    ``rows``: one per text within the maximum (all its masks), one per mask of a longer text (a window
    centred on it); callers that batch on their own (the server) run ``rows`` in any grouping through
    ``predict`` and hand the results back to ``answer``.
    """

    encodings: list[Any]
    masks: list[np.ndarray]
    rows: list[MaskRow]
    single: bool
    top_k: int


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
        plan = self.plan(inputs, top_k)
        target_ids = self.target_ids(targets) if targets is not None else None
        predicted = self.predict([(ids, positions) for ids, positions, _ in plan.rows], top_k, target_ids, batch_size)
        return self.answer(plan, predicted)

    def plan(self, inputs: str | Sequence[str], top_k: int = 5, encodings: list[Any] | None = None) -> MaskPlan:
        """Tokenize (unless ``encodings`` from ``encode`` are given) and check: masks, ``top_k`` and the size of
        the answer, before any model work."""
        texts, single = as_text_list(inputs, "inputs")
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= self.limits.top_k:
            raise InputError(f"top_k must be an integer from 1 to {self.limits.top_k}, got {top_k!r}")
        if encodings is None:
            encodings = self.encode(texts)
        masks = self._masks(encodings)
        rows = mask_rows(encodings, masks, self.engine.text.max_length)
        self._check_answer_size(texts, encodings, rows, top_k)
        return MaskPlan(encodings, masks, rows, single, top_k)

    def encode(self, texts: list[str]) -> list[Any]:
        """Each text's whole encoding: a text over the maximum is read whole (its ids only), and each of its
        masks gets a window centred on it."""
        return read_whole(self.engine.text, texts, detail=False)

    def predict(
        self,
        rows: Sequence[tuple[Sequence[int], Sequence[int]]],
        top_k: int,
        target_ids: np.ndarray | None = None,
        batch_size: int = 32,
    ) -> list[list[Best]]:
        """(ids, mask positions) rows -> per row, per position: (scores, token ids), best first."""
        out: list[list[Best]] = [[] for _ in rows]
        for batch in length_sorted_batches([len(r[0]) for r in rows], batch_size):
            ids, attn = pad_ids([rows[r][0] for r in batch], self.engine.text.info.pad_token_id,
                                self.engine.text.pad_to_multiple)
            width = ids.shape[1]
            positions = np.asarray([row * width + p for row, r in enumerate(batch) for p in rows[r][1]], np.int64)
            owners = [r for r in batch for _ in rows[r][1]]
            for r, best in zip(owners, self._best(ids, attn, positions, owners, top_k, target_ids)):
                out[r].append(best)
        return out

    def answer(self, plan: MaskPlan, predicted: Sequence[Sequence[Best]]) -> list[Any]:
        """The pipeline's structure from ``predict``'s results for ``plan.rows`` (in the same order)."""
        by_slot: dict[tuple[int, int], tuple[list[int], int, Best]] = {}
        for (ids, positions, slots), bests in zip(plan.rows, predicted):
            for position, slot, best in zip(positions, slots, bests):
                by_slot[slot] = (ids, int(position), best)
        results = self._format([[by_slot[(i, k)] for k in range(len(plan.masks[i]))] for i in range(len(plan.encodings))])
        return results[0] if plan.single else results

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

    def _check_answer_size(self, texts: list[str], encodings: list[Any], rows: list[MaskRow], top_k: int) -> None:
        """Each prediction's ``sequence`` repeats the text it fills (a long text's window, not the text)."""
        chars = 0
        for ids, positions, slots in rows:
            i = slots[0][0]
            per_token = len(texts[i]) / max(len(encodings[i].ids), 1)
            chars += len(positions) * top_k * int(per_token * len(ids) + 1)
        if chars > self.limits.sequence_chars:
            raise InputError(
                f"the answer would hold about {chars} characters of 'sequence' strings (top_k x masks x text "
                f"length), over the limit of {self.limits.sequence_chars} per call (FillMaskLimits.sequence_chars): "
                "lower top_k, or pass fewer masks or shorter texts per call"
            )

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"limits": vars(self.limits).copy()}

    def _format(self, texts: list[list[tuple[list[int], int, Best]]]) -> list[Any]:
        """Per text, per mask: (the ids it was predicted in, its position there, its best tokens). A text within
        the maximum is its own ids; a longer text's mask was predicted in a window, and its ``sequence`` is
        that window filled in (the document would repeat megabytes per prediction).

        Every string of the call is decoded in two batched calls (the tokenizer runs them in parallel):
        decoded one by one, 64 texts x top 5 cost ~36 ms of a fill-mask call, more than a GPU's whole
        encoder at b64 x 128."""
        filled: list[list[int]] = []
        skip: list[bool] = []  # as the transformers pipeline: other masks stay visible when there are several
        picked: list[tuple[float, int]] = []
        for masks in texts:
            for ids, pos, (scores, tokens) in masks:
                for score, token_id in zip(scores, tokens):
                    row = list(ids)
                    row[int(pos)] = int(token_id)
                    filled.append(row)
                    skip.append(len(masks) == 1)
                    picked.append((float(score), int(token_id)))
        text = self.engine.text
        sequences = [""] * len(filled)
        for flag in (True, False):
            at = [n for n, s in enumerate(skip) if s is flag]
            for n, decoded in zip(at, text.decode_batch([filled[n] for n in at], skip_special_tokens=flag)):
                sequences[n] = decoded
        token_strs = text.decode_batch([[token] for _, token in picked], skip_special_tokens=False)
        preds = iter(
            {"score": score, "token": token, "token_str": token_str, "sequence": sequence}
            for (score, token), token_str, sequence in zip(picked, token_strs, sequences)
        )
        results: list[Any] = []
        for masks in texts:
            per_mask = [[next(preds) for _ in scores] for _, _, (scores, _) in masks]
            results.append(per_mask[0] if len(masks) == 1 else per_mask)
        return results

    def target_ids(self, targets: str | Sequence[str]) -> np.ndarray:
        """Vocabulary ids of ``targets``; a word outside the vocab is replaced by its first piece.

        Logged, as the transformers pipeline does, but once per call with a count and a few examples:
        100,000 unknown targets must not write 100,000 lines.
        """
        words, _ = as_text_list(targets, "targets")
        tok = self.engine.text.tokenizer
        known = [tok.token_to_id(word) for word in words]
        unknown = [i for i, tid in enumerate(known) if tid is None]
        pieces = tok.encode_batch([words[i] for i in unknown], add_special_tokens=False) if unknown else []
        replaced: list[str] = []
        empty: list[str] = []
        for i, encoding in zip(unknown, pieces):
            if encoding.ids:
                known[i] = encoding.ids[0]
                replaced.append(f"{words[i][:40]!r} -> {tok.id_to_token(encoding.ids[0])!r}")
            else:
                empty.append(repr(words[i][:40]))
        if replaced:
            log.warning("%d target(s) not in the vocabulary are scored by their first piece, e.g. %s",
                        len(replaced), ", ".join(replaced[:TARGET_EXAMPLES]))
        if empty:
            log.warning("%d target(s) produce no tokens and are ignored, e.g. %s", len(empty),
                        ", ".join(empty[:TARGET_EXAMPLES]))
        ids = dict.fromkeys(t for t in known if t is not None)  # ordered, O(1) per target
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
    probs: np.ndarray = exp / exp.sum()
    return probs
