"""Drift-guided mixed precision: keep the most sensitive MatMuls in fp32 until a drift budget holds.

Sensitivity is measured end to end, not guessed: each candidate (every weight MatMul, and the
int8 embedding table) is emulated alone in int8 inside the fp32 graph (the per-row quantize ->
dequantize round trip on its input, rounded 7-bit weights; one graph with a run-time switch per candidate),
and the drift it causes on the corpus is measured.
The candidates are then kept in fp32 in that order and the real int8 graph is rebuilt and its drift
(mean relative error of the token embeddings against fp32) measured, doubling then bisecting the
prefix length, until the budget holds with the fewest fp32 candidates.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from polyglot_onnx import manifest as mf
from polyglot_onnx.errors import QuantizeError
from polyglot_onnx.graph_toolkit import layer_index, weight_matmuls
from polyglot_onnx.progress import Progress
from polyglot_onnx.quantize.feeds import corpus_feeds, cpu_session
from polyglot_onnx.quantize.graphs import load_model
from polyglot_onnx.quantize.int8 import quantize_rowwise_int8
from polyglot_onnx.quantize.rowwise import quantize_weight, row_constants


def _tokens(session: Any, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """Token embeddings per text (padding dropped)."""
    out = []
    for feed in feeds:
        (hidden,) = session.run([mf.TOKEN_EMBEDDINGS], feed)
        for row, keep in zip(hidden, feed[mf.ATTENTION_MASK].astype(bool)):
            out.append(row[keep].astype(np.float64))
    return out


def token_drift(reference: list[np.ndarray], candidate: list[np.ndarray]) -> float:
    """Mean over texts of ||candidate - reference|| / ||reference||: the scalar the budget bounds.

    Token embeddings rather than pooled ones: averaging over tokens hides most of the noise, so a
    sentence-level budget could not tell which MatMuls matter.
    """
    errors = [np.linalg.norm(c - r) / max(np.linalg.norm(r), 1e-30) for r, c in zip(reference, candidate)]
    return float(np.mean(errors))


EMBEDDING = "<embedding table>"  # the tied lookup + head table, a candidate like any MatMul


def _fake_weight(w: np.ndarray) -> np.ndarray:
    """The rounded weight the per-row recipe stores (7-bit, per output channel), in fp32."""
    q, scale = quantize_weight(w)
    return (q.astype(np.float32) * scale).astype(np.float32)


SWITCH = "mixed_precision_switch"  # graph input: one float per candidate, 1 = emulate it in int8


def switched_emulation(fp32: Any, candidates: list[str], block: int) -> Any:
    """One fp32 graph in which any single candidate can be switched to emulated int8 at run time.

    MatMul: its input becomes x + s * (rowq(x) - x), the per-row int8 round trip of the default
    recipe (rowwise.py), and its weight W + s * (round7(W) - W);
    the embedding lookup adds s * (round8(table) - table)[ids]. With the switch vector fed one-hot,
    one session measures every candidate: no graph copy or session per candidate (which cost
    ~15 s each on mBERT and would take most of an hour on mmBERT-base).
    """
    from onnx import TensorProto, helper, numpy_helper

    from polyglot_onnx.quantize.embedding import (
        dequantize_blocks,
        pick_block,
        quantize_blocks,
        word_embedding_lookup,
    )

    model = load_model_copy(fp32)
    inits = {i.name: i for i in model.graph.initializer}
    model.graph.input.append(helper.make_tensor_value_info(SWITCH, TensorProto.FLOAT, [len(candidates)]))
    nodes = list(model.graph.node)
    extra_inits = row_constants()

    def switch(k: int, tag: str) -> tuple[list[Any], str]:
        index = f"{tag}.switch_index"
        extra_inits.append(numpy_helper.from_array(np.array(k, dtype=np.int64), index))
        return [helper.make_node("Gather", [SWITCH, index], [f"{tag}.switch"], name=f"{tag}.switch")], f"{tag}.switch"

    def blend(base: str, delta: str, s: str, tag: str) -> tuple[list[Any], str]:
        """base + s * delta."""
        return [
            helper.make_node("Mul", [s, delta], [f"{tag}.scaled"], name=f"{tag}.scaled"),
            helper.make_node("Add", [base, f"{tag}.scaled"], [f"{tag}.out"], name=f"{tag}.out"),
        ], f"{tag}.out"

    for k, name in enumerate(candidates):
        if name == EMBEDDING:
            lookup = word_embedding_lookup(model)
            table = numpy_helper.to_array(inits[lookup.input[0]])
            delta = dequantize_blocks(*quantize_blocks(table, pick_block(table.shape[1], block))) - table
            extra_inits.append(numpy_helper.from_array(delta.astype(np.float32), "emb.delta"))
            picked = helper.make_node("Gather", ["emb.delta", lookup.input[1]], ["emb.delta_rows"], name="emb.rows")
            sw, s = switch(k, "emb")
            mix, out = blend("emb.lookup", "emb.delta_rows", s, "emb")
            original = lookup.output[0]
            lookup.output[0] = "emb.lookup"
            at = nodes.index(lookup) + 1
            nodes[at:at] = [picked, *sw, *mix, helper.make_node("Identity", [out], [original], name="emb.id")]
            continue
        node = next(n for n in nodes if n.name == name)
        x, w_name = node.input[0], node.input[1]
        weight = numpy_helper.to_array(inits[w_name])
        extra_inits.append(numpy_helper.from_array(_fake_weight(weight) - weight, f"{name}.wdelta"))
        sw, s = switch(k, name)
        q = [f"{name}.{part}" for part in ("abs", "max", "s0", "s", "unit", "q", "dq", "back", "dx")]
        act = [  # the per-row round trip of rowwise.py, in fp32
            helper.make_node("Abs", [x], [q[0]], name=q[0]),
            helper.make_node("ReduceMax", [q[0], "rowq.last_axis"], [q[1]], name=q[1], keepdims=1),
            helper.make_node("Mul", [q[1], "rowq.inv_levels"], [q[2]], name=q[2]),
            helper.make_node("Max", [q[2], "rowq.tiny"], [q[3]], name=q[3]),
            helper.make_node("Div", [x, q[3]], [q[4]], name=q[4]),
            helper.make_node("QuantizeLinear", [q[4], "rowq.one", "rowq.zero_point"], [q[5]], name=q[5]),
            helper.make_node("DequantizeLinear", [q[5], "rowq.one", "rowq.zero_point"], [q[6]], name=q[6]),
            helper.make_node("Mul", [q[6], q[3]], [q[7]], name=q[7]),
            helper.make_node("Sub", [q[7], x], [q[8]], name=q[8]),
        ]
        mix_x, new_x = blend(x, q[4], s, f"{name}.x")
        mix_w, new_w = blend(w_name, f"{name}.wdelta", s, f"{name}.w")
        node.input[0], node.input[1] = new_x, new_w
        at = nodes.index(node)
        nodes[at:at] = [*sw, *act, *mix_x, *mix_w]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(extra_inits)
    return model


def sensitivities(
    fp32: Any,
    feeds: list[dict[str, np.ndarray]],
    reference: list[np.ndarray],
    int8: Any,
    threads: int | None,
    progress: Progress,
) -> list[dict[str, Any]]:
    """End-to-end drift of each candidate emulated alone in int8, largest first.

    End to end because local error misleads: a LayerNorm right after the embedding lookup
    amplifies the table's rounding far more than a MatMul's own output error suggests.
    """
    candidates = [n.name for n in weight_matmuls(fp32)]
    if int8.embedding_block:
        candidates.append(EMBEDDING)
    index = {n.name: layer_index(n) for n in fp32.graph.node}
    session = cpu_session(switched_emulation(fp32, candidates, int8.embedding_block), threads)
    ranked = []
    for k, name in enumerate(candidates):
        one_hot = np.zeros(len(candidates), dtype=np.float32)
        one_hot[k] = 1.0
        switched = [feed | {SWITCH: one_hot} for feed in feeds]
        drift = token_drift(reference, _tokens(session, switched))
        ranked.append({"node": name, "layer": index.get(name), "drift_alone": drift})
        if (k + 1) % max(1, len(candidates) // 4) == 0:
            progress.info(f"sensitivity {k + 1}/{len(candidates)}")
    return sorted(ranked, key=lambda r: -r["drift_alone"])


def _options_keeping(base: Any, keep: list[str]) -> Any:
    matmuls = tuple(k for k in keep if k != EMBEDDING)
    return replace(base, keep_fp32=matmuls, embedding_block=0 if EMBEDDING in keep else base.embedding_block)


def load_model_copy(model: Any) -> Any:
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _latency_ms(model: Any, feed: dict[str, np.ndarray], output: str, threads: int | None, runs: int = 7) -> float:
    session = cpu_session(model, threads)
    session.run([output], feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run([output], feed)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def mixed_precision_int8(root: Path, manifest: mf.Manifest, options: Any, progress: Progress) -> tuple[Any, dict[str, Any]]:
    """The int8 graph with the fewest fp32 MatMuls whose drift stays within ``options.max_drift``."""
    budget = float(options.max_drift)
    fp32_path = root / manifest.variants["fp32"].graph_file
    feeds = corpus_feeds(root, manifest, options.corpus, per_language=4, batch=16, mask_row_token=False, minimum=64)
    fp32 = load_model(fp32_path)
    reference = _tokens(cpu_session(fp32, options.threads), feeds)
    ranked = sensitivities(fp32, feeds, reference, options.int8, options.threads, progress)
    progress.info(f"sensitivity of {len(ranked)} candidates measured; most sensitive: {ranked[0]['node']} (layer {ranked[0]['layer']})")
    order = [r["node"] for r in ranked]
    cache: dict[int, tuple[Any, float]] = {}

    def build(k: int) -> tuple[Any, float]:
        if k not in cache:
            model, _ = quantize_rowwise_int8(load_model(fp32_path), _options_keeping(options.int8, order[:k]))
            drift = token_drift(reference, _tokens(cpu_session(model, options.threads), feeds))
            progress.info(f"{k:>3} of {len(order)} kept in fp32 -> drift {drift:.3g} (budget {budget:.3g})")
            cache[k] = (model, drift)
        return cache[k]

    plain_model, plain = build(0)
    if plain <= budget:
        chosen = 0
    else:
        _, floor = build(len(order))
        if floor > budget:
            raise QuantizeError(
                f"--max-drift {budget:g} cannot be met: with every MatMul and the embedding table in fp32 the "
                f"graph still drifts {floor:.3g}; raise --max-drift or use the fp32 variant"
            )
        low, high = 0, 1  # invariant: build(low) misses the budget, build(high) may meet it
        while high < len(order) and build(high)[1] > budget:
            low, high = high, min(2 * high, len(order))
        while high - low > 1:
            mid = (low + high) // 2
            if build(mid)[1] <= budget:
                high = mid
            else:
                low = mid
        chosen = high
    model, drift = build(chosen)
    keep = order[:chosen]
    sample = feeds[0]
    report = {
        "method": "dynamic, drift-guided mixed precision",
        "options": _options_keeping(options.int8, keep).describe(),
        "mixed_precision": {
            "max_drift": budget,
            "drift_metric": "mean relative error of token embeddings vs fp32",
            "corpus_texts": int(sum(f[mf.INPUT_IDS].shape[0] for f in feeds)),
            "drift_plain_int8": plain,
            "drift_mixed": drift,
            "fp32_nodes": [r for r in ranked if r["node"] in set(keep)],
            "candidates": len(order),
            "evaluations": len(cache),
            "bytes_plain_int8": plain_model.ByteSize(),
            "bytes_mixed": model.ByteSize(),
            "latency_ms_plain_int8": _latency_ms(plain_model, sample, mf.TOKEN_EMBEDDINGS, options.threads),
            "latency_ms_mixed": _latency_ms(model, sample, mf.TOKEN_EMBEDDINGS, options.threads),
            "latency_batch": list(sample[mf.INPUT_IDS].shape),
        },
    }
    progress.info(f"kept {len(keep)} of {len(order)} candidates in fp32: drift {plain:.3g} -> {drift:.3g}")
    return model, report
