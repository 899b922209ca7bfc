"""What the project knows about a published checkpoint before downloading it: the catalog's record type and
the shape presets the family files share (export/families/*.py hold the rows; polyglot_onnx/catalog.py
assembles them). Plain data, no heavy imports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
    position_offset: int = 0  # RoBERTa family: max_position_embeddings = max_length + pad_token_id + 1
    type_vocab_size: int | None = None  # 1 for the RoBERTa family (a single token type)
    max_positions: int | None = None  # position table, where it outlasts max_length (sentence-transformers caps)
    has_mlm_head: bool = True  # False: the published checkpoint is a bare encoder (sentence embeddings)
    # sentence-transformers modules after the Transformer, as published (modules.json)
    pipeline: tuple[str, ...] = ()
    # query/passage prefixes the model card asks for: (name, text) pairs, for Embedder.encode(prompt=...)
    prompts: tuple[tuple[str, str], ...] = ()

    def config_overrides(self) -> dict[str, object]:
        """transformers config fields that rebuild this architecture with random weights."""
        base: dict[str, object] = {
            "num_hidden_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "num_attention_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_positions or self.max_length + self.position_offset,
        }
        if self.type_vocab_size is not None:
            base["type_vocab_size"] = self.type_vocab_size
        if self.local_window is not None:
            base["local_attention"] = self.local_window
        if self.global_every is not None:
            base["global_attn_every_n_layers"] = self.global_every
        return base


# shapes shared by several checkpoints' config.json
XLMR: dict[str, Any] = {"architecture": "xlm-roberta", "vocab_size": 250002, "mask_token": "<mask>",
                        "position_offset": 2, "type_vocab_size": 1}
BASE: dict[str, Any] = {"num_layers": 12, "hidden_size": 768, "num_heads": 12, "intermediate_size": 3072}
LARGE: dict[str, Any] = {"num_layers": 24, "hidden_size": 1024, "num_heads": 16, "intermediate_size": 4096}
MINI: dict[str, Any] = {"num_layers": 12, "hidden_size": 384, "num_heads": 12, "intermediate_size": 1536}
E5_PROMPTS = (("query", "query: "), ("passage", "passage: "))
MEAN_NORM = ("Pooling(mean)", "Normalize")
