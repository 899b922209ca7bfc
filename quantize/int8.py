"""INT8 graphs for CPU: per-row MatMuls (default), onnxruntime's dynamic or static QDQ, plus the
int8 embedding table.

The default (``rowwise.py``) is batch-invariant and cannot saturate on AVX2-only CPUs. The other
two go through onnxruntime's quantizer, called with the operator list spelled out: its default
list rewrites the ONNX Attention op into a com.microsoft QAttention that rejects Attention-23's
attributes, and it would quantize the embedding Gather with one per-tensor scale.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from polyglot_onnx.errors import QuantizeError, first_line
from polyglot_onnx.quantize.embedding import QuantizeTiedEmbedding, contrib_output_types, untie_heads


@dataclass(frozen=True)
class Int8Options:
    """Why these defaults: see the drift figures in benchmarks/README.md (per-channel lowers drift at no speed cost)."""

    per_channel: bool = True
    reduce_range: bool = False
    embedding_block: int = 64  # 0 keeps the embedding table in fp32
    keep_fp32: tuple[str, ...] = field(default_factory=tuple)  # MatMul nodes left in fp32 (mixed precision)

    def describe(self) -> dict[str, Any]:
        data = asdict(self)
        data["keep_fp32"] = list(self.keep_fp32)
        return data


def _extra_options() -> dict[str, Any]:
    from onnx import TensorProto

    # DefaultTensorType: graphs whose value_info lacks a MatMul weight's type fail without it.
    return {"MatMulConstBOnly": True, "DefaultTensorType": TensorProto.FLOAT}


def _embedding(model: Any, options: Int8Options) -> dict[str, Any]:
    """Runs before onnxruntime's quantizer, which would transpose a tied table in place."""
    if not options.embedding_block:
        untie_heads(model)
        return {"quantized": False}
    return QuantizeTiedEmbedding(options.embedding_block).apply(model).counts


def _run_quantizer(fn: Any, model: Any, **kwargs: Any) -> Any:
    import onnx

    # The exporter's value_info can disagree with onnx shape inference, which the quantizer runs
    # first; types and shapes are re-inferred from the initializers anyway. Outputs of the
    # com.microsoft embedding kernels are declared float: shape inference cannot see through them,
    # and static quantization skips every activation whose type it does not know.
    del model.graph.value_info[:]
    model.graph.value_info.extend(contrib_output_types(model))
    with tempfile.TemporaryDirectory(prefix="polyglot-q-") as tmp:
        out = Path(tmp) / "q.onnx"
        logging.disable(logging.WARNING)  # its root-logger advice about pre-processing is noise here
        try:
            fn(model, str(out), op_types_to_quantize=["MatMul"], extra_options=_extra_options(), **kwargs)
        except Exception as err:  # onnxruntime.quantization raises plain exceptions
            raise QuantizeError(f"onnxruntime quantization failed: {first_line(err)}") from err
        finally:
            logging.disable(logging.NOTSET)
        quantized = onnx.load(str(out), load_external_data=True)
    # ... and the quantizer writes back inferred value_info onnxruntime may reject: drop it too.
    del quantized.graph.value_info[:]
    return quantized


def quantize_rowwise_int8(model: Any, options: Int8Options) -> tuple[Any, dict[str, Any]]:
    """The default: 7-bit per-channel weights, int8 activations with one scale per row (token)."""
    from polyglot_onnx.quantize.rowwise import QuantizeMatMulsPerRow

    embedding = _embedding(model, options)
    report = QuantizeMatMulsPerRow(keep=options.keep_fp32, per_channel=options.per_channel).apply(model)
    del model.graph.value_info[:]
    return model, {"method": "rowwise", "options": options.describe(), "matmuls": report.counts,
                   "embedding": embedding}


def quantize_dynamic_int8(model: Any, options: Int8Options) -> tuple[Any, dict[str, Any]]:
    """onnxruntime's dynamic int8: s8 weights, u8 activations with ONE scale per call (per batch).

    Not batch-invariant, and with 8-bit weights it saturates on AVX2-only CPUs: kept as an opt-in
    recipe for comparison (``int8-dynamic``).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    embedding = _embedding(model, options)
    out = _run_quantizer(
        quantize_dynamic,
        model,
        per_channel=options.per_channel,
        reduce_range=options.reduce_range,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=list(options.keep_fp32),
    )
    return out, {"method": "dynamic", "options": options.describe(), "embedding": embedding}


class CorpusReader:
    """Calibration batches for static quantization, tokenized by the package's own tokenizer."""

    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self._batches = batches
        self._iter: Iterator[dict[str, np.ndarray]] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self._batches)


def quantize_static_int8(
    model: Any, options: Int8Options, calibration: list[dict[str, np.ndarray]]
) -> tuple[Any, dict[str, Any]]:
    """Static QDQ int8: activation ranges calibrated on the multilingual corpus (MinMax)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if not calibration:
        raise QuantizeError("static int8 needs calibration text: pass a non-empty --corpus")
    embedding = _embedding(model, options)
    out = _run_quantizer(
        quantize_static,
        model,
        calibration_data_reader=CorpusReader(calibration),
        quant_format=QuantFormat.QDQ,
        per_channel=options.per_channel,
        reduce_range=options.reduce_range,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=list(options.keep_fp32),
    )
    report = {"method": "static-qdq", "calibration_batches": len(calibration), "options": options.describe()}
    return out, report | {"embedding": embedding}
