"""The variants ``polyglot-onnx quantize`` can build: one table, not a chain of ifs.

Each row says how to build the variant and what it is (``facts``: provider, batch invariance, rank for
variant="auto", drift gate). quantize writes the facts into the variant's manifest entry, and the runtime,
the drift checker, the self-check, the bench and the CLI read them from there: adding a recipe is adding a
row here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from polyglot_onnx.errors import InputError
from polyglot_onnx.gates import DEFAULT_GATES
from polyglot_onnx.manifest import VariantFacts
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
    summary: str
    build: Callable[[Any, BuildInputs], tuple[Any, dict[str, Any]]]
    facts: VariantFacts  # written into the manifest entry: what the runtime and the tools read
    # Bumped when the recipe's graph changes, so caches (the bench's packages) know to rebuild.
    revision: int = 1

    @property
    def provider(self) -> str | None:
        return self.facts.provider


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
        # revision 3: per-row activations and 7-bit weights (batch-invariant, AVX2-safe);
        # revision 4: the same numbers in fewer passes (blocked QuantizeLinear, MatMulIntegerToFloat)
        Recipe("int8", "model.int8.onnx", "per-row int8 MatMuls (7-bit weights) + block-wise int8 embedding table",
               _int8, VariantFacts("cpu", True, 0, DEFAULT_GATES["int8"]), revision=4),
        # one activation scale per batch: not batch-invariant, so never picked by auto (a comparison)
        Recipe("int8-dynamic", "model.int8-dynamic.onnx",
               "onnxruntime dynamic int8 (one activation scale per batch), for comparison", _int8_dynamic,
               VariantFacts("cpu", False, None, DEFAULT_GATES["int8"])),
        Recipe("int8-static", "model.int8-static.onnx", "static QDQ int8 (7-bit weights), calibrated on the corpus",
               _int8_static, VariantFacts("cpu", True, 1, DEFAULT_GATES["int8"]), revision=2),
        # revision 2: LayerNorm in fp16, one Cast per fp32 table (no fp32 islands inside the encoder)
        Recipe("fp16", "model.fp16.onnx", "fp16 encoder and head; fp32 rotary tables and pooling", _fp16,
               VariantFacts("cuda", True, 0, DEFAULT_GATES["fp16"]), revision=2),
    )
}
DEFAULT_VARIANTS = ("int8", "fp16")


def best_for(provider: str) -> str | None:
    """The recipe variant="auto" prefers on ``provider`` (the bench's default contender variant)."""
    ranked = sorted((r.facts.auto_rank, r.name) for r in RECIPES.values()
                    if r.facts.provider == provider and r.facts.auto_rank is not None)
    return ranked[0][1] if ranked else None


def names_help() -> str:
    """'int8, int8-dynamic, int8-static, fp16' for the CLI's help."""
    return ", ".join(RECIPES)


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
