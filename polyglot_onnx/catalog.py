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


_XLMR = {"architecture": "xlm-roberta", "vocab_size": 250002, "mask_token": "<mask>", "position_offset": 2,
         "type_vocab_size": 1}
_BASE = {"num_layers": 12, "hidden_size": 768, "num_heads": 12, "intermediate_size": 3072}
_LARGE = {"num_layers": 24, "hidden_size": 1024, "num_heads": 16, "intermediate_size": 4096}
_MINI = {"num_layers": 12, "hidden_size": 384, "num_heads": 12, "intermediate_size": 1536}
_E5_PROMPTS = (("query", "query: "), ("passage", "passage: "))
_MEAN_NORM = ("Pooling(mean)", "Normalize")

# The encoders deployed beside mBERT and mmBERT (issue 15): XLM-RoBERTa and what is built on it,
# DistilBERT, and the BERT-shaped sentence-embedding models. Facts from each checkpoint's config.json,
# modules.json and model card.
MULTILINGUAL_NEIGHBOURS: tuple[ModelSpec, ...] = (
    ModelSpec(name="xlm-roberta-base", hub_id="FacebookAI/xlm-roberta-base", max_length=512, **_BASE, **_XLMR),
    ModelSpec(name="xlm-roberta-large", hub_id="FacebookAI/xlm-roberta-large", max_length=512, **_LARGE, **_XLMR),
    ModelSpec(
        name="multilingual-e5-base", hub_id="intfloat/multilingual-e5-base", max_length=512, has_mlm_head=False,
        pipeline=_MEAN_NORM, prompts=_E5_PROMPTS, **_BASE, **_XLMR,
    ),
    ModelSpec(
        name="multilingual-e5-large", hub_id="intfloat/multilingual-e5-large", max_length=512, has_mlm_head=False,
        pipeline=_MEAN_NORM, prompts=_E5_PROMPTS, **_LARGE, **_XLMR,
    ),
    ModelSpec(
        name="bge-m3", hub_id="BAAI/bge-m3", max_length=8192, has_mlm_head=False, default_pooling="cls",
        pipeline=("Pooling(cls)", "Normalize"), **_LARGE, **_XLMR,
    ),
    ModelSpec(
        name="paraphrase-multilingual-mpnet-base-v2",
        hub_id="sentence-transformers/paraphrase-multilingual-mpnet-base-v2",
        max_length=128, max_positions=514,  # sentence-transformers max_seq_length caps the 514-row table
        has_mlm_head=False, pipeline=("Pooling(mean)",), **_BASE, **_XLMR,
    ),
    ModelSpec(
        name="distilbert-base-multilingual-cased", hub_id="distilbert/distilbert-base-multilingual-cased",
        architecture="distilbert", num_layers=6, hidden_size=768, num_heads=12, intermediate_size=3072,
        vocab_size=119547, max_length=512, mask_token="[MASK]",
    ),
    ModelSpec(
        name="bert-base-multilingual-uncased", hub_id="google-bert/bert-base-multilingual-uncased",
        architecture="bert", vocab_size=105879, max_length=512, mask_token="[MASK]", **_BASE,
    ),
    ModelSpec(
        name="labse", hub_id="sentence-transformers/LaBSE", architecture="bert", vocab_size=501153,
        max_length=256, max_positions=512,  # sentence-transformers max_seq_length caps the 512-row table
        mask_token="[MASK]", has_mlm_head=False, default_pooling="cls",
        pipeline=("Pooling(cls)", "Dense(768->768, tanh)", "Normalize"), **_BASE,
    ),
    ModelSpec(
        name="multilingual-e5-small", hub_id="intfloat/multilingual-e5-small", architecture="bert",
        vocab_size=250037, max_length=512, mask_token="<mask>", has_mlm_head=False, pipeline=_MEAN_NORM,
        prompts=_E5_PROMPTS, **_MINI,
    ),
    ModelSpec(
        name="paraphrase-multilingual-minilm-l12-v2",
        hub_id="sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2", architecture="bert",
        vocab_size=250037, max_length=128, max_positions=512, mask_token="<mask>", has_mlm_head=False, pipeline=("Pooling(mean)",),
        **_MINI,
    ),
    ModelSpec(  # disentangled attention: no fused ONNX operator, exported "unfused" (fused count 0)
        name="mdeberta-v3-base", hub_id="microsoft/mdeberta-v3-base", architecture="deberta-v2", vocab_size=251000,
        max_length=512, mask_token="[MASK]", **_BASE,
    ),
)


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
        *MULTILINGUAL_NEIGHBOURS,
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
