"""Benchmark inputs: texts of an exact token length, built from the project's multilingual corpus.

Latency depends on the token count, not on which words make it up, so each fixed-length workload
cuts real multilingual text (24 languages, 13 scripts) to exactly ``seq`` tokens for the model's
own tokenizer, special tokens and the one mask token included. The corpus workload draws 2,000
lengths between 5 and 400 tokens (log-uniform: short texts are common, long ones rare) and keeps
them in arrival order, so a runtime that pads in arrival order pays for it and one that sorts by
length does not.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyglot_onnx.errors import BenchError

FILL_MASK = "fill-mask"
EMBED = "embed"
TASKS = (FILL_MASK, EMBED)
CORPUS = "corpus"
DOCUMENT = "document"  # one long text at batch 1, embedded whole (windowed past the model maximum)


@dataclass(frozen=True)
class Workload:
    """One row of the table: a task at a batch size and sequence length, or the corpus run."""

    task: str
    batch: int
    seq: int  # tokens per text (0 for the corpus workload: lengths vary)
    texts: list[str] = field(repr=False, compare=False)
    lengths: list[int] = field(repr=False, compare=False)  # each text's token count, specials included
    kind: str = "fixed"  # "fixed" or "corpus"

    @property
    def tokens(self) -> int:
        """Real (unpadded) tokens over all texts of one call."""
        return sum(self.lengths)

    @property
    def key(self) -> str:
        return workload_key(self.task, self.kind, self.batch, self.seq)


def workload_key(task: str, kind: str, batch: int, seq: int) -> str:
    """One row's identity: a workload's and its result rows' (which carry the same four fields)."""
    return f"{task}/{kind}/b{batch}/s{seq}"


class TextCutter:
    """Cuts a long multilingual stream into texts of an exact token count for one tokenizer."""

    def __init__(self, tokenizer_file: Path, mask_token: str | None, seed: int = 0) -> None:
        from tokenizers import Tokenizer

        from polyglot_onnx.quantize.corpus import load_corpus

        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.mask_token = mask_token
        samples = [s.text for s in load_corpus(None).samples]
        random.Random(seed).shuffle(samples)
        self.stream = " ".join(samples)
        enc = self.tokenizer.encode(self.stream, add_special_tokens=False)
        self.offsets: list[tuple[int, int]] = list(enc.offsets)
        self.specials = len(self.tokenizer.encode("a").ids) - len(self.tokenizer.encode("a", add_special_tokens=False).ids)
        self.rng = random.Random(seed + 1)

    def length(self, text: str) -> int:
        return len(self.tokenizer.encode(text).ids)

    def _span(self, start: int, count: int) -> str:
        """``count`` tokens of the stream from token ``start`` (wrapping around)."""
        pieces, n = [], len(self.offsets)
        while count > 0:
            start %= n
            take = min(count, n - start)
            pieces.append(self.stream[self.offsets[start][0] : self.offsets[start + take - 1][1]])
            count -= take
            start += take
        return " ".join(pieces)

    def text(self, seq: int, with_mask: bool) -> str:
        """A text of exactly ``seq`` tokens (or the closest the tokenizer allows) from a random start."""
        if with_mask and not self.mask_token:
            raise BenchError("fill-mask needs a mask token, but this tokenizer has none: use --tasks embed")
        content = max(1, seq - self.specials - (1 if with_mask else 0))
        start = self.rng.randrange(len(self.offsets))
        best, best_gap = "", math.inf
        for _ in range(8):
            if with_mask:
                left = content // 2
                text = f"{self._span(start, left)} {self.mask_token} {self._span(start + left, content - left)}".strip()
            else:
                text = self._span(start, content)
            gap = self.length(text) - seq
            if abs(gap) < abs(best_gap):
                best, best_gap = text, gap
            if gap == 0 or content - gap < 1:
                break
            content -= gap
        return best


def fixed_workloads(cutter: TextCutter, tasks: list[str], batches: list[int], seqs: list[int]) -> list[Workload]:
    """Every task x batch x sequence row, cheapest first (so an interrupted run still has the small rows)."""
    rows = []
    for task in tasks:
        for seq in sorted(seqs):
            for batch in sorted(batches):
                texts = [cutter.text(seq, task == FILL_MASK) for _ in range(batch)]
                rows.append(Workload(task, batch, seq, texts, [cutter.length(t) for t in texts]))
    return rows


def corpus_workload(cutter: TextCutter, size: int, batch: int, low: int = 5, high: int = 400) -> Workload:
    """``size`` embedding texts of log-uniform length in [low, high] tokens, in arrival order."""
    lengths = [round(math.exp(cutter.rng.uniform(math.log(low), math.log(high)))) for _ in range(size)]
    texts = [cutter.text(n, with_mask=False) for n in lengths]
    return Workload(EMBED, batch, 0, texts, [cutter.length(t) for t in texts], kind=CORPUS)


def document_workloads(cutter: TextCutter, seqs: list[int]) -> list[Workload]:
    """One text per length, batch 1, for the cost per 1,000 tokens of a whole long document."""
    rows = []
    for seq in sorted(seqs):
        text = cutter.text(seq, with_mask=False)
        rows.append(Workload(EMBED, 1, seq, [text], [cutter.length(text)], kind=DOCUMENT))
    return rows


def describe(workload: Workload) -> dict[str, Any]:
    return {"task": workload.task, "kind": workload.kind, "batch": workload.batch, "seq": workload.seq,
            "texts": len(workload.texts), "tokens": workload.tokens}
