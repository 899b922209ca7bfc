"""Stage 1: Hugging Face checkpoint -> validated fp32 ONNX package (needs the ``export`` extra)."""

from polyglot_onnx.export.pipeline import ExportOptions, export_package
from polyglot_onnx.export.validate import Tolerance

__all__ = ["ExportOptions", "Tolerance", "export_package"]
