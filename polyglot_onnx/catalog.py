"""The model catalog: plain data, one frozen record per supported model, keyed by name.

The rows live with their architecture in export/families/<family>.py (strategy, random-weight build, catalog
rows and tiny fixture in one file); this module assembles them and looks names up. Architecture
differences live in fields, never in if/elif chains on model names.
"""

from __future__ import annotations

from polyglot_onnx.errors import ModelNotFoundError, look_up
from polyglot_onnx.export.families import SPECS
from polyglot_onnx.model_spec import ModelSpec

CATALOG: dict[str, ModelSpec] = {spec.name: spec for spec in SPECS}


def get_spec(name: str) -> ModelSpec:
    """Look a catalog name up; an unknown name lists the known ones."""
    return look_up(CATALOG, name, lambda known: ModelNotFoundError(
        f"unknown catalog model {name!r}: known names are {known} "
        "(or pass a hub id like org/name, or a local checkpoint directory)"))


def find_by_hub_id(hub_id: str) -> ModelSpec | None:
    """The catalog entry published under ``hub_id``, if any."""
    return next((s for s in CATALOG.values() if s.hub_id.lower() == hub_id.lower()), None)
