"""Per-architecture export strategies, as a table keyed by transformers' ``model_type``.

A strategy says where the encoder and the masked-LM transform live on the HF model, and which
fused ONNX Runtime operators each encoder layer must become. Adding an architecture is adding
a row, not an if/elif branch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from polyglot_onnx.errors import ExportError


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

    def encoder(self, model: Any) -> Any:
        """The bare encoder, whether ``model`` is the *ForMaskedLM wrapper or the base model."""
        return getattr(model, self.encoder_attr, model)

    def transform(self, model: Any) -> Any:
        obj = model
        for part in self.transform_attr.split("."):
            obj = getattr(obj, part)
        return obj

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


LAYER_KINDS = {"sliding_attention": "local", "full_attention": "global"}  # transformers' layer_types names


STRATEGIES: dict[str, ArchStrategy] = {
    s.model_type: s
    for s in (
        ArchStrategy(
            model_type="bert",
            encoder_attr="bert",
            transform_attr="cls.predictions.transform",
            fused_ops_per_layer={"Attention": 1},
            needs_token_type_ids=True,
        ),
        ArchStrategy(
            model_type="modernbert",
            encoder_attr="model",
            transform_attr="head",
            fused_ops_per_layer={"Attention": 1, "RotaryEmbedding": 2},
            local_window_attr="local_attention",
            layer_types_attr="layer_types",
            banded_local=True,
        ),
    )
}


def strategy_for(model_type: str) -> ArchStrategy:
    try:
        return STRATEGIES[model_type]
    except KeyError:
        known = ", ".join(sorted(STRATEGIES))
        raise ExportError(
            f"architecture {model_type!r} is not supported: polyglot-onnx exports {known} checkpoints"
        ) from None
