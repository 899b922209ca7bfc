"""The variants ``polyglot-onnx quantize`` can build: a table, not a chain of ifs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from polyglot_onnx.errors import InputError
from polyglot_onnx.quantize.int8 import Int8Options


@dataclass(frozen=True)
class BuildInputs:
    """What a recipe may need besides the fp32 graph."""

    int8: Int8Options
    calibration: Callable[[], list[dict[str, Any]]]


@dataclass(frozen=True)
class Recipe:
    name: str
    graph_file: str
    provider: str  # where the variant is meant to run
    summary: str
    build: Callable[[Any, BuildInputs], tuple[Any, dict[str, Any]]]
    # Bumped when the recipe's graph changes, so caches (the bench's packages) know to rebuild.
    revision: int = 1
    # Whether a text's result is independent of its batch neighbours and padding (recorded in the
    # manifest; the runtime and the server say so when it is not).
    batch_invariant: bool = True


def _int8(model: Any, inputs: BuildInputs) -> tuple[Any, dict[str, Any]]:
    from polyglot_onnx.quantize.int8 import quantize_rowwise_int8

    return quantize_rowwise_int8(model, inputs.int8)


def _int8_dynamic(model: Any, inputs: BuildInputs) -> tuple[Any, dict[str, Any]]:
    from polyglot_onnx.quantize.int8 import quantize_dynamic_int8

    return quantize_dynamic_int8(model, inputs.int8)


def _int8_static(model: Any, inputs: BuildInputs) -> tuple[Any, dict[str, Any]]:
    from polyglot_onnx.quantize.int8 import quantize_static_int8

    # 7-bit weights: static QDQ runs the same u8 x s8 kernels, which saturate on AVX2 at 8 bits.
    return quantize_static_int8(model, replace(inputs.int8, reduce_range=True), inputs.calibration())


def _fp16(model: Any, inputs: BuildInputs) -> tuple[Any, dict[str, Any]]:
    from polyglot_onnx.quantize.fp16 import convert_fp16

    return convert_fp16(model)


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        # revision 2: int8 compute in the tied LM head (MatMulNBits accuracy_level 4);
        # revision 3: per-row activations and 7-bit weights (batch-invariant, AVX2-safe)
        Recipe("int8", "model.int8.onnx", "cpu",
               "per-row int8 MatMuls (7-bit weights) + block-wise int8 embedding table", _int8, revision=3),
        Recipe("int8-dynamic", "model.int8-dynamic.onnx", "cpu",
               "onnxruntime dynamic int8 (one activation scale per batch), for comparison", _int8_dynamic,
               batch_invariant=False),
        Recipe("int8-static", "model.int8-static.onnx", "cpu", "static QDQ int8 (7-bit weights), calibrated on the corpus",
               _int8_static, revision=2),
        # revision 2: LayerNorm in fp16, one Cast per fp32 table (no fp32 islands inside the encoder)
        Recipe("fp16", "model.fp16.onnx", "cuda", "fp16 encoder and head; fp32 rotary tables and pooling", _fp16,
               revision=2),
    )
}
DEFAULT_VARIANTS = ("int8", "fp16")


def parse_variants(text: str | list[str] | tuple[str, ...], allow_fp32: bool = False) -> list[str]:
    """'int8,fp16' -> ['int8', 'fp16'], refusing unknown names with the list of known ones."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if not names:
        raise InputError("no variants given: pass e.g. --variants int8,fp16")
    known = (["fp32"] if allow_fp32 else []) + list(RECIPES)
    for name in names:
        if name == "fp32" and not allow_fp32:
            raise InputError(f"fp32 is the exported graph itself, not a quantized variant: pass one of {', '.join(RECIPES)}")
        if name not in known:
            raise InputError(f"unknown variant {name!r}: choose from {', '.join(known)}")
    if len(set(names)) != len(names):
        raise InputError(f"variant listed twice in {','.join(names)}: list each once")
    return names
