"""Saving ONNX graphs within protobuf's 2 GB limit; shared by export and quantize (needs onnx)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

EXTERNAL_DATA_THRESHOLD = 1_800_000_000  # protobuf cannot serialize >2 GB; keep a margin


def initializer_bytes(model: Any) -> int:
    import numpy as np
    from onnx import helper

    total = 0
    for init in model.graph.initializer:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize
        total += int(np.prod(init.dims, dtype=np.int64)) * itemsize
    return total


def save_graph(model: Any, directory: Path, graph_file: str, threshold: int = EXTERNAL_DATA_THRESHOLD) -> list[str]:
    """Single file when it fits, else the graph plus one ``<graph_file>.data`` file; returns the names."""
    import onnx

    if initializer_bytes(model) < threshold:
        onnx.save_model(model, str(directory / graph_file))
        return [graph_file]
    data_file = f"{graph_file}.data"
    onnx.save_model(
        model,
        str(directory / graph_file),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data_file,
        size_threshold=1024,
    )
    return [graph_file, data_file]
