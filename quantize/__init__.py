"""Stage 2: INT8 / FP16 variants of a package and the accuracy-drift checker (``quantize`` extra).

Reads and writes only the package directory; the runtime never imports this stage. The public names load on
first use (PEP 562), so reading the recipe table (the CLI's help, the bench) does not load the quantizers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from polyglot_onnx.quantize.drift import DriftOptions, DriftReport, record, run_drift
    from polyglot_onnx.quantize.int8 import Int8Options
    from polyglot_onnx.quantize.package import QuantizeOptions, quantize_package

_WHERE = {
    "DriftOptions": "drift", "DriftReport": "drift", "record": "drift", "run_drift": "drift",
    "Int8Options": "int8", "QuantizeOptions": "package", "quantize_package": "package",
}
__all__ = ["DriftOptions", "DriftReport", "Int8Options", "QuantizeOptions", "quantize_package", "record",
           "run_drift"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'polyglot_onnx.quantize' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"polyglot_onnx.quantize.{_WHERE[name]}"), name)
