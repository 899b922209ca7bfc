"""What an export strategy is: where the encoder and the masked-LM transform live on the HF model, and which
fused ONNX Runtime operators each encoder layer must become.

Each family's strategy is a row in its own file (export/families/<family>.py); export/families assembles
the table keyed by transformers' ``model_type``. Adding an architecture is adding a file, not an if/elif.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ArchStrategy:
    model_type: str
    encoder_attr: str  # attribute of the *ForMaskedLM model holding the bare encoder
    transform_attr: str  # dotted path to the MLM transform applied before the tied decoder
    fused_ops_per_layer: dict[str, int] = field(default_factory=dict)
    needs_token_type_ids: bool = False
    local_window_attr: str | None = None
    layer_types_attr: str | None = None  # config list naming each layer's attention kind
    banded_local: bool = False  # local layers export as block-banded attention (export/banded.py)
    # a banded export also cuts each global layer's queries into this many Attention nodes (export/chunked.py)
    global_query_chunks: int = 1
    # ... and gives each layer an If that sends sequences of at most this many local windows to plain dense
    # attention (export/dispatch.py), where the blocks' and chunks' fixed costs outweigh them; 0 = never
    dense_up_to_windows: int = 0
    # Heads without one transform module (RoBERTa's lm_head, DistilBERT's vocab_*): dotted paths applied in
    # order before the tied decoder; "gelu" is the exact (erf) GELU the head calls as a function.
    transform_steps: tuple[str, ...] = ()
    # RoBERTa family: positions start after the padding index (pad_token_id + 1), computed by the model itself
    # from input_ids, so max_position_embeddings holds pad_token_id + 1 positions no text can use.
    positions_after_pad: bool = False
    # transformers attention route: "sdpa" fuses to ai.onnx Attention; "eager" for models without SDPA
    # (DeBERTa's disentangled attention), whose fused count is then honestly 0 ("unfused")
    attn_implementation: str = "sdpa"

    @property
    def fused(self) -> bool:
        return any(self.fused_ops_per_layer.values())

    def encoder(self, model: Any) -> Any:
        """The bare encoder, whether ``model`` is the *ForMaskedLM wrapper or the base model."""
        return getattr(model, self.encoder_attr, model)

    def transform(self, model: Any) -> Any:
        if self.transform_steps:
            import torch

            steps = [torch.nn.GELU() if s == "gelu" else _dotted(model, s) for s in self.transform_steps]
            return torch.nn.Sequential(*steps)
        return _dotted(model, self.transform_attr)

    def usable_positions(self, config: Any) -> int:
        """Positions a text may use: RoBERTa reserves the first pad_token_id + 1 of the table."""
        reserved = int(config.pad_token_id) + 1 if self.positions_after_pad else 0
        return int(config.max_position_embeddings) - reserved

    def expected_ops(self, num_layers: int) -> dict[str, int]:
        return {op: n * num_layers for op, n in self.fused_ops_per_layer.items()}

    def local_window(self, config: Any) -> int | None:
        return getattr(config, self.local_window_attr) if self.local_window_attr else None

    def layer_kinds(self, config: Any) -> list[str] | None:
        """'local' or 'global' per layer, for architectures that mix the two; None otherwise."""
        if not self.layer_types_attr:
            return None
        return [LAYER_KINDS.get(t, t) for t in getattr(config, self.layer_types_attr)]

    def expected_ops_by_kind(self, kinds: list[str]) -> dict[str, int]:
        """Fused ops per kind of layer, keyed 'Attention.local', 'Attention.global', ..."""
        ops = self.fused_ops_per_layer.items()
        return {f"{op}.{kind}": n * kinds.count(kind) for op, n in ops for kind in sorted(set(kinds))}

    def fusion_expectation(self, config: Any, banded: bool) -> dict[str, int]:
        """What the fusion check asserts for this checkpoint: totals, per-kind counts for mixed-attention
        models, and one Attention per query chunk in a banded export's global layers."""
        expected = self.expected_ops(int(config.num_hidden_layers))
        kinds = self.layer_kinds(config)
        if kinds is None:
            return expected
        expected |= self.expected_ops_by_kind(kinds)
        if not banded:
            return expected
        extra = {"Attention.global": (self.global_query_chunks - 1) * kinds.count("global")}
        if self.dense_up_to(config):  # each layer's dense route sits beside its banded / chunked one
            extra = {"Attention.local": kinds.count("local"), "Attention.global": extra["Attention.global"] +
                     kinds.count("global")}
        for key, n in extra.items():
            for name in ("Attention", key):
                expected[name] = expected.get(name, 0) + n
        return expected

    def dense_up_to(self, config: Any) -> int:
        """Longest sequence a banded export runs densely (0: always banded); see ``dense_up_to_windows``."""
        window = self.local_window(config)
        return int(self.dense_up_to_windows * window) if window and self.banded_local else 0


def _dotted(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


LAYER_KINDS = {"sliding_attention": "local", "full_attention": "global"}  # transformers' layer_types names
