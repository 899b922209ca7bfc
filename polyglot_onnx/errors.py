"""Typed errors shared by every stage.

Each message says what is wrong and how to fix it; the CLI prints ``str(err)`` as one line and
exits non-zero, so a message must stand on its own without a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

V = TypeVar("V")


class PolyglotError(Exception):
    """Base class: everything the library raises on purpose."""


class ModelNotFoundError(PolyglotError):
    """A model name, hub id or checkpoint directory could not be resolved or loaded."""


class ExportError(PolyglotError):
    """The checkpoint could not be turned into a valid ONNX graph."""


class ValidationError(ExportError):
    """The exported graph disagrees with PyTorch beyond tolerance."""


class FusionError(ExportError):
    """Fused attention did not cover every encoder layer."""


class QuantizeError(PolyglotError):
    """A quantized or converted variant could not be built, verified or written."""


class PackageError(PolyglotError):
    """A package directory is missing, incomplete, corrupt or inconsistent."""


class ProviderError(PolyglotError):
    """The requested onnxruntime execution provider is not available."""


class SelfCheckError(PolyglotError):
    """A variant does not reproduce the package's stored canary references on this machine."""


class NoCanaryError(SelfCheckError):
    """The package has no canary references, so a self-check cannot measure anything."""


class NonFiniteOutputError(PolyglotError):
    """The graph produced NaN/Inf for an input: never returned, always raised (corrupt weights, overflow)."""


class InputError(PolyglotError, ValueError):
    """The caller passed input the model cannot use (no mask token, empty list, ...)."""


class DependencyError(PolyglotError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""


class JobError(PolyglotError):
    """A corpus job cannot start or go on: its output belongs to another run, or a row is bad under --fail-on-error."""


class BenchError(PolyglotError):
    """A benchmark contender could not be set up or built (isolated env, foreign exporter)."""


def look_up(table: Mapping[str, V], key: str, error: Callable[[str], PolyglotError]) -> V:
    """``table[key]``, or ``error`` raised with the known keys listed (a name lookup's one error shape)."""
    try:
        return table[key]
    except KeyError:
        raise error(", ".join(sorted(table))) from None


def first_line(err: BaseException, limit: int | None = 300) -> str:
    """The first line of a foreign exception (onnxruntime, torch.export), for one-line messages."""
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:limit]


class TruncationWarning(UserWarning):
    """Text longer than the model maximum was truncated."""
