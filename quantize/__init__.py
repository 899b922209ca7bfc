"""Stage 2: INT8 / FP16 variants of a package and the accuracy-drift checker (``quantize`` extra).

Reads and writes only the package directory; the runtime never imports this stage.
"""

from polyglot_onnx.quantize.drift import DriftOptions, DriftReport, record, run_drift
from polyglot_onnx.quantize.int8 import Int8Options
from polyglot_onnx.quantize.package import QuantizeOptions, quantize_package

__all__ = [
    "DriftOptions",
    "DriftReport",
    "Int8Options",
    "QuantizeOptions",
    "quantize_package",
    "record",
    "run_drift",
]
