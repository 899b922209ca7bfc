"""The variants ``polyglot-onnx quantize`` can build: a table, not a chain of ifs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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


def _int8(model: Any, inputs: BuildInputs) -> tuple[Any, dict[str, Any]]:
    from polyglot_onnx.quantize.int8 import quantize_dynamic_int8

    return quantize_dynamic_int8(model, inputs.int8)


def _int8_static(model: Any, inputs: BuildInputs) -> tuple[Any, dict[str, Any]]:
    from polyglot_onnx.quantize.int8 import quantize_static_int8

    return quantize_static_int8(model, inputs.int8, inputs.calibration())


def _fp16(model: Any, inputs: BuildInputs) -> tuple[Any, dict[str, Any]]:
    from polyglot_onnx.quantize.fp16 import convert_fp16

    return convert_fp16(model)


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("int8", "model.int8.onnx", "cpu", "dynamic int8 MatMuls + block-wise int8 embedding table", _int8,
               revision=2),  # 2: int8 compute in the tied LM head (MatMulNBits accuracy_level 4)
        Recipe("int8-static", "model.int8-static.onnx", "cpu", "static QDQ int8, calibrated on the corpus", _int8_static),
        Recipe("fp16", "model.fp16.onnx", "cuda", "fp16 with fp32 LayerNorm, rotary tables and pooling", _fp16),
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
            raise InputError("fp32 is the exported graph itself, not a quantized variant: pass int8, int8-static or fp16")
        if name not in known:
            raise InputError(f"unknown variant {name!r}: choose from {', '.join(known)}")
    if len(set(names)) != len(names):
        raise InputError(f"variant listed twice in {','.join(names)}: list each once")
    return names
