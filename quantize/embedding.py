"""Block-wise int8 word-embedding table, stored once for the lookup and the tied masked-LM head.

The table is most of a multilingual encoder's parameters (119,547 x 768 in mBERT, 256,000 x 768
in mmBERT) and onnxruntime's default dynamic quantization gives it one per-tensor scale. Here it
becomes uint8 blocks (zero point 128, one fp32 scale per ``block_size`` values of a row) that two
com.microsoft kernels read from the same initializer: GatherBlockQuantized for the lookup and
MatMulNBits (bits=8) for the decoder, which computes ``x @ W.T`` from the [V, H] layout as is.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from polyglot_onnx.errors import QuantizeError
from polyglot_onnx.graph_toolkit import (
    MS_DOMAIN,
    PassReport,
    consumers,
    ensure_contrib_opset,
    in_subgraph,
    initializers,
)
from polyglot_onnx.manifest import INPUT_IDS

# MatMulNBits accuracy_level 4: activations quantized to int8 per block, int8 dot products.
HEAD_ACCURACY_LEVEL = 4


def quantize_blocks(table: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-block int8 stored as uint8 + 128: returns ([V, H/block, block] uint8, [V, H/block] fp32)."""
    rows, width = table.shape
    blocks = table.reshape(rows, width // block, block).astype(np.float32)
    scale = np.abs(blocks).max(axis=-1) / 127.0
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    q = np.clip(np.rint(blocks / scale[..., None]), -127, 127).astype(np.int16) + 128
    return q.astype(np.uint8), scale


def dequantize_blocks(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return ((q.astype(np.float32) - 128.0) * scale[..., None]).reshape(q.shape[0], -1)


def pick_block(width: int, wanted: int) -> int:
    """Largest power of two <= wanted (>= 16, the kernels' minimum) that divides the row width."""
    block = wanted
    while block >= 16:
        if width % block == 0 and block & (block - 1) == 0:
            return block
        block //= 2
    raise QuantizeError(
        f"the embedding width {width} is not divisible by a power-of-two block of at least 16: "
        "quantize with --embedding-block 0 to keep the table in fp32"
    )


def word_embedding_lookup(model: Any) -> Any | None:
    """The Gather that reads token embeddings from an initializer with the graph's input_ids."""
    inits = initializers(model)
    return next(
        (n for n in model.graph.node if n.op_type == "Gather" and n.input[1] == INPUT_IDS and n.input[0] in inits),
        None,
    )


def contrib_output_types(model: Any) -> list[Any]:
    """float value_info for what the embedding kernels (and the Reshape after them) produce."""
    from onnx import TensorProto, helper

    names = [
        out
        for node in model.graph.node
        if node.domain == MS_DOMAIN or (node.op_type == "Reshape" and node.name.endswith("_flat"))
        for out in node.output
    ]
    return [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in names]


def untie_heads(model: Any) -> int:
    """Rewrite tied Gemm(transB=1) readers of the table as Transpose + MatMul (+ Add).

    onnxruntime's quantizer turns a Gemm(transB=1) into a MatMul by transposing its weight
    initializer in place, which corrupts the lookup sharing that initializer. With the table left
    in fp32, the decoder reads it through a Transpose node instead, which the quantizer skips
    (MatMulConstBOnly) and onnxruntime folds once at load: still one copy on disk.
    """
    from onnx import helper

    lookup = word_embedding_lookup(model)
    if lookup is None:
        return 0
    nodes = list(model.graph.node)
    count = 0
    for head in [n for n in consumers(model).get(lookup.input[0], []) if n is not lookup and n.op_type == "Gemm"]:
        at = nodes.index(head)
        out = head.output[0]
        transposed = f"{head.input[1]}.T"
        has_bias = len(head.input) > 2 and head.input[2]
        mm_out = f"{out}.nobias" if has_bias else out
        seq = [
            helper.make_node("Transpose", [head.input[1]], [transposed], name=f"{head.name}_wT", perm=[1, 0]),
            helper.make_node("MatMul", [head.input[0], transposed], [mm_out], name=f"{head.name}_mm"),
        ]
        if has_bias:
            seq.append(helper.make_node("Add", [mm_out, head.input[2]], [out], name=f"{head.name}_bias"))
        nodes[at : at + 1] = seq
        count += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return count


class QuantizeTiedEmbedding:
    """Replaces the word-embedding Gather (and the tied decoder Gemm) with int8 block kernels."""

    def __init__(self, block_size: int = 64) -> None:
        self.block_size = block_size

    def apply(self, model: Any) -> PassReport:
        from onnx import helper, numpy_helper

        inits = initializers(model)
        users = consumers(model)
        lookup = word_embedding_lookup(model)
        if lookup is None:
            return PassReport("tied-embedding-int8", {"quantized": False})
        name = lookup.input[0]
        table = numpy_helper.to_array(inits[name])
        if table.ndim != 2 or table.dtype != np.float32:
            return PassReport("tied-embedding-int8", {"quantized": False})
        rows, width = table.shape
        block = pick_block(width, self.block_size)
        heads = [n for n in users.get(name, []) if n is not lookup]
        for node in heads:
            if in_subgraph(model.graph, node):  # the rewrite below replaces nodes of the main graph only
                raise QuantizeError(f"the embedding table {name} is read inside an If branch ({node.name}): "
                                    "quantize with --embedding-block 0")
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type != "Gemm" or attrs.get("transB") != 1 or attrs.get("transA", 0) != 0:
                raise QuantizeError(
                    f"the embedding table {name} is also read by {node.op_type} {node.name}, which this "
                    "pass cannot share int8 weights with: quantize with --embedding-block 0"
                )
            if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
                raise QuantizeError(f"tied head {node.name} scales its Gemm (alpha/beta != 1): use --embedding-block 0")

        q, scale = quantize_blocks(table, block)
        error = float(np.abs(dequantize_blocks(q, scale) - table).max())
        q_name, s_name, s3_name = f"{name}.q8", f"{name}.scale", f"{name}.scale3"
        shape_name = f"{name}.scale3_shape"
        lookup_shape = f"{name}.lookup_shape"
        new_inits = [
            numpy_helper.from_array(q, q_name),
            numpy_helper.from_array(scale, s_name),
            numpy_helper.from_array(np.array([rows, width // block, 1], dtype=np.int64), shape_name),
            numpy_helper.from_array(np.array([0, 0, width], dtype=np.int64), lookup_shape),
        ]
        nodes = list(model.graph.node)
        replaced: list[Any] = []
        at = nodes.index(lookup)
        blocks_out = f"{lookup.output[0]}.blocks"
        replaced_lookup = [
            # scales for the 3-D gather come from the same [V, H/block] tensor (constant-folded)
            helper.make_node("Reshape", [s_name, shape_name], [s3_name], name=f"{name}_scale3"),
            helper.make_node(
                "GatherBlockQuantized",
                [q_name, lookup.input[1], s3_name],
                [blocks_out],
                domain=MS_DOMAIN,
                name=f"{lookup.name}_q8",
                gather_axis=0,
                quantize_axis=2,
                block_size=block,
                bits=8,
            ),
            helper.make_node("Reshape", [blocks_out, lookup_shape], [lookup.output[0]], name=f"{lookup.name}_flat"),
        ]
        nodes[at : at + 1] = replaced_lookup
        for head in heads:
            at = nodes.index(head)
            out = head.output[0]
            has_bias = len(head.input) > 2 and head.input[2]
            mm_out = f"{out}.nobias" if has_bias else out
            seq = [
                helper.make_node(
                    "MatMulNBits",
                    [head.input[0], q_name, s_name],
                    [mm_out],
                    domain=MS_DOMAIN,
                    name=f"{head.name}_q8",
                    K=width,
                    N=rows,
                    bits=8,
                    block_size=block,
                    # int8 x int8 compute: without it onnxruntime dequantizes the whole [V, H] table
                    # on every call (392 ms of a 400 ms mBERT fill-mask); with it 30 ms, and the
                    # top-1/top-5/KL drift against fp32 is unchanged (benchmarks/README.md).
                    accuracy_level=HEAD_ACCURACY_LEVEL,
                )
            ]
            if has_bias:
                seq.append(helper.make_node("Add", [mm_out, head.input[2]], [out], name=f"{head.name}_bias"))
            nodes[at : at + 1] = seq
            replaced.append(head)
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        kept = [i for i in model.graph.initializer if i.name != name]
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept + new_inits)
        ensure_contrib_opset(model)
        return PassReport("tied-embedding-int8", {
            "quantized": True,
            "table": name,
            "shape": [rows, width],
            "block_size": block,
            "lookups": 1,
            "tied_heads": len(replaced),
            "max_abs_error": error,
            "bytes_before": table.nbytes,
            "bytes_after": q.nbytes + scale.nbytes,
        })
