"""Which fused-attention route is faster for mBERT on CPU?

Route A (the default): torch.onnx dynamo export at opset 23 with SDPA -> ai.onnx Attention.
Route B: TorchScript export with eager attention -> onnxruntime.transformers BERT optimizer ->
com.microsoft Attention (+ SkipLayerNorm, BiasGelu fusions).

Both graphs carry the same interface (head only at the mask positions) and the same weights, and
are timed in one process with the same session options. Usage:

    python benchmarks/bert_fusion_route.py --package PKG_DIR --checkpoint CKPT_DIR [--threads 2]

PKG_DIR is a route-A package of the checkpoint (polyglot-onnx export CKPT_DIR --out PKG_DIR).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def export_route_b(checkpoint: str, out: Path) -> tuple[Path, dict[str, int]]:
    import onnx
    import torch
    from onnxruntime.transformers.optimizer import optimize_model

    from polyglot_onnx.export.graph import build_module, example_inputs, graph_io
    from polyglot_onnx.export.loading import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    ckpt.model.set_attn_implementation("eager")
    module = build_module(ckpt)
    inputs, outputs = graph_io(ckpt.has_mlm_head)
    raw = out / "torchscript.onnx"
    with torch.no_grad():
        torch.onnx.export(
            module, example_inputs(ckpt), str(raw), dynamo=False, opset_version=17,
            input_names=inputs, output_names=outputs,
            dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"}, "mask_positions": {0: "m"}},
        )
    cfg = ckpt.config
    optimized = optimize_model(str(raw), model_type="bert", num_heads=cfg.num_attention_heads, hidden_size=cfg.hidden_size)
    fused = optimized.get_fused_operator_statistics()
    path = out / "optimized.onnx"
    onnx.save_model(optimized.model, str(path))
    return path, {k: int(v) for k, v in fused.items() if v}


def time_session(path: Path, threads: int, seq: int, masks: int, runs: int) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {
        "input_ids": rng.integers(1000, 100000, (1, seq), dtype=np.int64),
        "attention_mask": np.ones((1, seq), dtype=np.int64),
        "mask_positions": np.arange(masks, dtype=np.int64) + 1,
    }
    want = ["mask_logits"] if masks else ["sentence_embedding"]
    for _ in range(3):
        sess.run(want, feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(want, feeds)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    import onnxruntime as ort

    parser = argparse.ArgumentParser()
    parser.add_argument("--package", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results/bert_fusion_route.json")
    args = parser.parse_args()
    route_a = Path(args.package) / "model.onnx"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        route_b, fused = export_route_b(args.checkpoint, Path(tmp))
        sizes = {"A": route_a.stat().st_size, "B": route_b.stat().st_size}
        for seq in (32, 128, 512):
            for masks, task in ((1, "fill-mask"), (0, "embed")):
                a = time_session(route_a, args.threads, seq, masks, args.runs)
                b = time_session(route_b, args.threads, seq, masks, args.runs)
                rows.append({"seq": seq, "task": task, "dynamo_opset23_ms": round(a, 2),
                             "torchscript_ort_fusion_ms": round(b, 2), "b_over_a": round(b / a, 3)})
                print(rows[-1], flush=True)
    result = {
        "machine": platform.processor() or platform.machine(), "threads": args.threads, "batch": 1,
        "onnxruntime": ort.__version__, "route_b_fused_ops": fused, "bytes": sizes, "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))


if __name__ == "__main__":
    main()
