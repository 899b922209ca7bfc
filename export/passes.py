"""Graph passes over the exported ONNX model, one job each, each reporting what it did.

Each is a ``graph_toolkit.GraphPass`` (modelled on onnxruntime's fusion classes): ``apply()`` returns one
``PassReport`` with counts so tests can assert them and the manifest can record them.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

from polyglot_onnx.errors import FusionError
from polyglot_onnx.graph_toolkit import DEFAULT_DOMAINS, PassReport, iter_nodes, layer_index, op_histogram


def op_counts_by_layer_kind(model: Any, ops: Any, kinds: list[str]) -> Counter[str]:
    """Counts of ``ops`` keyed 'Op.kind' (kind of the layer each node came from, 'Op.unknown' if none)."""
    out: Counter[str] = Counter()
    for node in iter_nodes(model.graph):
        if node.op_type in ops and node.domain in DEFAULT_DOMAINS:
            i = layer_index(node)
            out[f"{node.op_type}.{kinds[i] if i is not None and i < len(kinds) else 'unknown'}"] += 1
    return out


class FusionCheck:
    """Fails the export when any encoder layer's attention did not become one fused operator.

    Without this, a transformers or torch upgrade could silently decompose attention into
    MatMul/Softmax and lose the fused kernels. With ``kinds`` (each layer's 'local' or 'global'),
    ``expected`` may also hold per-kind counts keyed 'Attention.local', 'RotaryEmbedding.global'...
    """

    def __init__(self, expected: dict[str, int], kinds: list[str] | None = None) -> None:
        self.expected = expected
        self.kinds = kinds

    def apply(self, model: Any) -> PassReport:
        counts = op_histogram(model)
        if self.kinds is not None:
            counts.update(op_counts_by_layer_kind(model, {k.split(".")[0] for k in self.expected}, self.kinds))
        found = {op: counts.get(op, 0) for op in self.expected}
        wrong = {op: n for op, n in found.items() if n != self.expected[op]}
        if wrong:
            detail = ", ".join(f"{op}: {found[op]} found, {self.expected[op]} expected" for op in wrong)
            raise FusionError(
                f"fused attention does not cover every layer ({detail}): export with "
                "attn_implementation='sdpa' at opset 23 using the pinned torch/transformers versions"
            )
        return PassReport("fusion-check", found)


class DeduplicateInitializers:
    """Stores byte-identical weights once (tied embedding/decoder matrices above all).

    onnxruntime's transformer optimizer and some exporters write tied weights twice; on mmBERT
    that is 1.2 GB -> 2 GB. Small constants are ignored: merging them saves nothing.
    """

    def __init__(self, min_bytes: int = 1 << 16) -> None:
        self.min_bytes = min_bytes

    def apply(self, model: Any) -> PassReport:
        from onnx import numpy_helper

        seen: dict[tuple[int, tuple[int, ...], str], str] = {}
        rename: dict[str, str] = {}
        keep = []
        saved = 0
        for init in model.graph.initializer:
            # raw_data is how exporters store weights: hash it as is, no numpy copy of 1 GB tables
            data = init.raw_data or numpy_helper.to_array(init).tobytes()
            if len(data) < self.min_bytes:
                keep.append(init)
                continue
            key = (init.data_type, tuple(init.dims), hashlib.sha256(data).hexdigest())
            if key in seen:
                rename[init.name] = seen[key]
                saved += len(data)
            else:
                seen[key] = init.name
                keep.append(init)
        if rename:
            del model.graph.initializer[:]
            model.graph.initializer.extend(keep)
            for node in iter_nodes(model.graph):  # branches read outer-scope initializers by name too
                for i, name in enumerate(node.input):
                    if name in rename:
                        node.input[i] = rename[name]
        return PassReport("dedup-initializers", {"merged": len(rename), "bytes_saved": saved})


class ClampIrVersion:
    """onnx may write an IR version newer than onnxruntime reads (onnx 1.23: 14, ORT 1.31: 13)."""

    def __init__(self, max_version: int = 10) -> None:
        self.max_version = max_version

    def apply(self, model: Any) -> PassReport:
        before = int(model.ir_version)
        model.ir_version = min(before, self.max_version)
        return PassReport("clamp-ir-version", {"before": before, "after": int(model.ir_version)})


def count_large_matrices(model: Any, shape: tuple[int, int]) -> int:
    """How many initializers have exactly this 2-D shape (or its transpose): 1 means tied once."""
    dims = {shape, (shape[1], shape[0])}
    return sum(1 for init in model.graph.initializer if tuple(init.dims) in dims)
