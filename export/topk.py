"""Fill-mask finishes in the graph: softmax and the top k of each mask row, so the host only decodes.

Without this the runtime copied every mask row's logits to the host (119,547 floats for mBERT, 256,000 for
mmBERT) and ran softmax and a partial sort in numpy: on a GPU that host work took ~10x the GPU time of the
batch (shared FINDINGS). ``Softmax`` then ``TopK`` over the rows the head already computes cost one pass over
the logits where they are.

``k`` is a graph input ([1] int64; polyglot_onnx/graph_feeds.py feeds it wherever a stage runs the graph),
clamped to 1..vocabulary so no k can make TopK fail. Scores are fp32 in every variant (quantize/fp16.py keeps Softmax in fp32). The logits
stay an output: ``targets=`` scoring reads them and stays exact.
"""

from __future__ import annotations

from typing import Any

from polyglot_onnx import manifest as mf
from polyglot_onnx.graph_toolkit import PassReport

DEFAULT_K = 5  # the transformers fill-mask pipeline's default top_k: what validation compares


class MaskTopK:
    """Append softmax + TopK over ``mask_logits``: outputs ``mask_top_scores`` (fp32) and ``mask_top_ids``."""

    def apply(self, model: Any) -> PassReport:
        import numpy as np
        from onnx import TensorProto, helper, numpy_helper

        graph = model.graph
        if mf.MASK_LOGITS not in [o.name for o in graph.output]:
            return PassReport("mask-top-k", {"added": 0})
        p = "mask_top"
        k = mf.MASK_TOP_K
        graph.input.append(helper.make_tensor_value_info(k, TensorProto.INT64, [1]))
        nodes = [
            helper.make_node("Cast", [mf.MASK_LOGITS], [f"{p}.logits_f32"], name=f"{p}.logits_f32",
                             to=TensorProto.FLOAT),
            helper.make_node("Softmax", [f"{p}.logits_f32"], [f"{p}.probs"], name=f"{p}.softmax", axis=-1),
            helper.make_node("Shape", [f"{p}.probs"], [f"{p}.vocab"], name=f"{p}.vocab", start=-1),
            helper.make_node("Max", [k, f"{p}.one"], [f"{p}.k_low"], name=f"{p}.k_low"),
            helper.make_node("Min", [f"{p}.k_low", f"{p}.vocab"], [f"{p}.k"], name=f"{p}.k"),
            helper.make_node("TopK", [f"{p}.probs", f"{p}.k"], [mf.MASK_TOP_SCORES, mf.MASK_TOP_IDS],
                             name=f"{p}.topk", axis=-1, largest=1, sorted=1),
        ]
        graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), f"{p}.one"))
        graph.node.extend(nodes)
        graph.output.extend([
            helper.make_tensor_value_info(mf.MASK_TOP_SCORES, TensorProto.FLOAT, ["masks", "k"]),
            helper.make_tensor_value_info(mf.MASK_TOP_IDS, TensorProto.INT64, ["masks", "k"]),
        ])
        return PassReport("mask-top-k", {"added": 1})


def reference_top_k(logits: Any, k: int = DEFAULT_K) -> tuple[Any, Any]:
    """What the graph's top k must equal: float64 softmax, then the k best ids (lower id first on ties)."""
    import numpy as np

    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=-1, keepdims=True)
    k = min(k, probs.shape[-1])
    ids = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    return np.take_along_axis(probs, ids, axis=-1), ids
