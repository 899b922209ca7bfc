"""polyglot-onnx: multilingual encoders as fused ONNX Runtime packages.

``from polyglot_onnx import FillMask, Embedder`` loads only the runtime (onnxruntime, tokenizers,
numpy); the export stage is imported on demand and needs the ``export`` extra.
"""

from __future__ import annotations

from typing import Any

from polyglot_onnx.errors import (
    DependencyError,
    ExportError,
    FusionError,
    InputError,
    ModelNotFoundError,
    NonFiniteOutputError,
    PackageError,
    PolyglotError,
    ProviderError,
    QuantizeError,
    TruncationWarning,
    ValidationError,
)

__version__ = "0.1.0"

_LAZY = {
    "FillMask": "polyglot_onnx.runtime",
    "FillMaskLimits": "polyglot_onnx.runtime",
    "TextLimits": "polyglot_onnx.runtime",
    "Embedder": "polyglot_onnx.runtime",
    "TokenEmbeddings": "polyglot_onnx.runtime",
    "Tokenized": "polyglot_onnx.runtime",
    "WordEmbeddings": "polyglot_onnx.runtime",
    "export_package": "polyglot_onnx.export",
    "ExportOptions": "polyglot_onnx.export",
    "quantize_package": "polyglot_onnx.quantize",
    "QuantizeOptions": "polyglot_onnx.quantize",
    "run_drift": "polyglot_onnx.quantize",
    "DriftOptions": "polyglot_onnx.quantize",
}

__all__ = [
    "DependencyError",
    "DriftOptions",
    "Embedder",
    "ExportError",
    "ExportOptions",
    "FillMask",
    "FillMaskLimits",
    "FusionError",
    "InputError",
    "ModelNotFoundError",
    "NonFiniteOutputError",
    "PackageError",
    "PolyglotError",
    "ProviderError",
    "QuantizeError",
    "QuantizeOptions",
    "TextLimits",
    "TokenEmbeddings",
    "Tokenized",
    "TruncationWarning",
    "ValidationError",
    "WordEmbeddings",
    "export_package",
    "quantize_package",
    "run_drift",
]


def __getattr__(name: str) -> Any:
    """Lazy attributes keep ``import polyglot_onnx`` light and the export stage optional."""
    if name not in _LAZY:
        raise AttributeError(f"module 'polyglot_onnx' has no attribute {name!r}")
    import importlib

    if _LAZY[name] == "polyglot_onnx.export":
        try:
            import torch  # noqa: F401
        except ImportError as err:
            raise DependencyError(
                "export needs the export extra: pip install 'polyglot-onnx[export]' torch==2.13.0"
            ) from err
    if _LAZY[name] == "polyglot_onnx.quantize":
        try:
            import onnx  # noqa: F401
        except ImportError as err:
            raise DependencyError("quantize needs the quantize extra: pip install 'polyglot-onnx[quantize]'") from err
    return getattr(importlib.import_module(_LAZY[name]), name)
