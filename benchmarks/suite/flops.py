"""Model FLOPs of one call: the work the task needs, counted the same way for every contender.

Like MFU, this counts what the model must compute, not what an implementation chooses to do:
linear layers for every real token, dense attention (what every contender here executes, the
ModernBERT window being a mask), and for fill-mask the LM head on the masked row only. A
contender that runs the head over every token does that extra work on its own time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Shape:
    """The few config fields the FLOP count needs, read from config.json (no transformers)."""

    model_type: str
    layers: int
    hidden: int
    intermediate: int
    vocab: int

    @property
    def linear_macs_per_token(self) -> int:
        """Q, K, V, output projection and the feed-forward block of one layer."""
        h, i = self.hidden, self.intermediate
        ffn = FFN_MATRICES[self.model_type] * h * i
        return 4 * h * h + ffn

    def encoder_flops(self, lengths: list[int]) -> float:
        macs = 0
        for n in lengths:
            macs += self.layers * (n * self.linear_macs_per_token + 2 * n * n * self.hidden)
        return 2.0 * macs

    def head_flops(self, masks: int) -> float:
        """Transform dense + decoder, on the masked rows only."""
        return 2.0 * masks * (self.hidden * self.hidden + self.hidden * self.vocab)


# Feed-forward matrices of size hidden x intermediate: BERT up + down; ModernBERT GeGLU (2 x up) + down.
FFN_MATRICES: dict[str, int] = {"bert": 2, "modernbert": 3}


def read_shape(checkpoint: Path) -> Shape:
    cfg = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    return Shape(cfg["model_type"], cfg["num_hidden_layers"], cfg["hidden_size"], cfg["intermediate_size"],
                 cfg["vocab_size"])


def call_flops(shape: Shape, task: str, lengths: list[int]) -> float:
    """FLOPs of one call over texts of these token lengths (one mask each for fill-mask)."""
    flops = shape.encoder_flops(lengths)
    if task == "fill-mask":
        flops += shape.head_flops(len(lengths))
    return flops
