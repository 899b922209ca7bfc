"""The model families, one file each: ``export/families/<family>.py`` holds the family's export strategy, its
random-weight build, its catalog rows and its tiny test fixture. Adding a family is adding one file and one line
in FAMILIES; the tables the rest of the project reads are assembled here from those files.

Everything here is plain data and light imports (torch and transformers only inside the builders), so the
catalog can read the rows without the export stack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from polyglot_onnx.errors import ExportError, look_up
from polyglot_onnx.export.architectures import ArchStrategy
from polyglot_onnx.export.families import bert, deberta_v2, distilbert, modernbert, xlm_roberta
from polyglot_onnx.export.random_weights import RandomWeights
from polyglot_onnx.model_spec import ModelSpec

TinyBuilder = Callable[[Path, Path], Path]  # (out, tokenizer-training corpus) -> checkpoint directory


@dataclass(frozen=True)
class Family:
    """One architecture as the project knows it."""

    strategy: ArchStrategy
    random_weights: RandomWeights
    specs: tuple[ModelSpec, ...]
    tiny: dict[str, TinyBuilder] = field(default_factory=dict)  # the demo's tiny models, by name

    @property
    def model_type(self) -> str:
        return self.strategy.model_type


def _family(module: ModuleType) -> Family:
    return Family(module.STRATEGY, module.RANDOM_WEIGHTS, module.SPECS, dict(module.TINY))


FAMILIES: tuple[Family, ...] = tuple(_family(m) for m in (bert, modernbert, xlm_roberta, distilbert, deberta_v2))

STRATEGIES: dict[str, ArchStrategy] = {f.model_type: f.strategy for f in FAMILIES}
RANDOM_WEIGHTS: dict[str, RandomWeights] = {f.model_type: f.random_weights for f in FAMILIES}
SPECS: tuple[ModelSpec, ...] = tuple(spec for f in FAMILIES for spec in f.specs)
TINY_MODELS: dict[str, TinyBuilder] = {name: build for f in FAMILIES for name, build in f.tiny.items()}


def strategy_for(model_type: str) -> ArchStrategy:
    return look_up(STRATEGIES, model_type, lambda known: ExportError(
        f"architecture {model_type!r} is not supported: polyglot-onnx exports {known} checkpoints"))


def _check() -> None:
    """Each family's catalog rows name its own architecture (a row filed under the wrong family would export
    with another family's strategy)."""
    for family in FAMILIES:
        for spec in family.specs:
            if spec.architecture != family.model_type:
                raise ExportError(f"catalog row {spec.name} ({spec.architecture}) is filed under {family.model_type}")


_check()
