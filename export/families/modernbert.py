"""ModernBERT: mmBERT-small and mmBERT-base (rotary positions, 128-token sliding windows with a global layer
every third, GeGLU): export strategy, random-weight build, catalog rows and the tiny fixture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from polyglot_onnx.export.architectures import ArchStrategy
from polyglot_onnx.export.chunked import GLOBAL_QUERY_CHUNKS
from polyglot_onnx.export.random_weights import RandomWeights, pad_bpe
from polyglot_onnx.export.tiny import save_checkpoint, train_gemma_like
from polyglot_onnx.model_spec import ModelSpec

STRATEGY = ArchStrategy(
    model_type="modernbert",
    encoder_attr="model",
    transform_attr="head",
    fused_ops_per_layer={"Attention": 1, "RotaryEmbedding": 2},
    local_window_attr="local_attention",
    layer_types_attr="layer_types",
    banded_local=True,
    global_query_chunks=GLOBAL_QUERY_CHUNKS,
    dense_up_to_windows=2,
)

RANDOM_WEIGHTS = RandomWeights(
    "ModernBertConfig",
    "ModernBertForMaskedLM",
    train_gemma_like,
    pad_bpe,
    {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2, "cls_token_id": 2, "sep_token_id": 1},
)

# mmBERT's two sizes share everything but the width
MMBERT: dict[str, Any] = {
    "architecture": "modernbert", "num_layers": 22, "intermediate_size": 1152, "vocab_size": 256000,
    "max_length": 8192, "mask_token": "<mask>", "local_window": 128, "global_every": 3,
}
SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(name="mmbert-small", hub_id="jhu-clsp/mmBERT-small", hidden_size=384, num_heads=6, **MMBERT),
    ModelSpec(name="mmbert-base", hub_id="jhu-clsp/mmBERT-base", hidden_size=768, num_heads=12, **MMBERT),
)


def build_tiny_modernbert(out: Path, corpus: Path, seed: int = 0, initializer_range: float = 0.02) -> Path:
    """A 3-layer ModernBERT (local, local, global) with a 16-token window and GeGLU, no biases."""
    import torch
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    tokenizer = train_gemma_like(corpus)
    torch.manual_seed(seed)
    config = ModernBertConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=96,
        local_attention=16,
        global_attn_every_n_layers=3,
        max_position_embeddings=512,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        cls_token_id=2,
        sep_token_id=1,
        initializer_range=initializer_range,
    )
    model = ModernBertForMaskedLM(config).eval()
    return save_checkpoint(model, tokenizer, out)


TINY = {"tiny-modernbert": build_tiny_modernbert}
