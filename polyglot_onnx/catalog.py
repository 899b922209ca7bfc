"""The model catalog: plain data, one frozen record per supported model.

Architecture differences live in fields here and in the export stage's strategy table, never
in if/elif chains on model names.
"""

from __future__ import annotations

from dataclasses import dataclass

from polyglot_onnx.errors import ModelNotFoundError


@dataclass(frozen=True)
class ModelSpec:
    """What the project knows about a published checkpoint before downloading it."""

    name: str
    hub_id: str
    architecture: str  # transformers model_type: selects the export strategy
    num_layers: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_length: int
    mask_token: str
    default_pooling: str = "mean"
    local_window: int | None = None  # sliding-window width of local layers (ModernBERT)
    global_every: int | None = None  # every n-th layer attends globally (ModernBERT)

    def config_overrides(self) -> dict[str, object]:
        """transformers config fields that rebuild this architecture with random weights."""
        base: dict[str, object] = {
            "num_hidden_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "num_attention_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_length,
        }
        if self.local_window is not None:
            base["local_attention"] = self.local_window
        if self.global_every is not None:
            base["global_attn_every_n_layers"] = self.global_every
        return base


CATALOG: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="mbert-cased",
            hub_id="google-bert/bert-base-multilingual-cased",
            architecture="bert",
            num_layers=12,
            hidden_size=768,
            num_heads=12,
            intermediate_size=3072,
            vocab_size=119547,
            max_length=512,
            mask_token="[MASK]",
        ),
        ModelSpec(
            name="mmbert-small",
            hub_id="jhu-clsp/mmBERT-small",
            architecture="modernbert",
            num_layers=22,
            hidden_size=384,
            num_heads=6,
            intermediate_size=1152,
            vocab_size=256000,
            max_length=8192,
            mask_token="<mask>",
            local_window=128,
            global_every=3,
        ),
        ModelSpec(
            name="mmbert-base",
            hub_id="jhu-clsp/mmBERT-base",
            architecture="modernbert",
            num_layers=22,
            hidden_size=768,
            num_heads=12,
            intermediate_size=1152,
            vocab_size=256000,
            max_length=8192,
            mask_token="<mask>",
            local_window=128,
            global_every=3,
        ),
    )
}


def get_spec(name: str) -> ModelSpec:
    """Look a catalog name up; an unknown name lists the known ones."""
    try:
        return CATALOG[name]
    except KeyError:
        known = ", ".join(sorted(CATALOG))
        raise ModelNotFoundError(
            f"unknown catalog model {name!r}: known names are {known} "
            "(or pass a hub id like org/name, or a local checkpoint directory)"
        ) from None


def find_by_hub_id(hub_id: str) -> ModelSpec | None:
    """The catalog entry published under ``hub_id``, if any."""
    return next((s for s in CATALOG.values() if s.hub_id.lower() == hub_id.lower()), None)
