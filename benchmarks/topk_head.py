"""What finishing fill-mask in the graph saves: softmax + top k over the vocabulary, host vs onnxruntime.

    python benchmarks/topk_head.py [--vocab 119547,256000] [--rows 1,8,64] [--k 5] [--threads 2]
                                   [--package PKG] [--out benchmarks/results/topk_head]

Before export/topk.py the runtime copied each mask row's logits to the host and ran a float64 softmax and a
partial sort in numpy (``host``); now the graph ends in Softmax + TopK and returns k scores and ids per row
(``graph``). Both finish the same fp32 logits ([rows, vocab], the widths of mBERT and mmBERT), timed
interleaved in one process, so the difference is what a fill-mask call no longer pays after the LM head.
With ``--package`` (a package exported with the top-k outputs) it also times whole fill-mask calls at
batch 1 and 64 x 128 tokens through both paths of FillMask, for scale. Writes topk_head.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np


def finish_graph(threads: int) -> Any:
    """A session holding only the tail export/topk.py appends: Softmax(logits) -> TopK(k)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
        helper.make_node("TopK", ["probs", "k"], ["scores", "ids"], axis=-1, largest=1, sorted=1),
    ]
    graph = helper.make_graph(
        nodes, "finish",
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["rows", "vocab"]),
         helper.make_tensor_value_info("k", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["rows", "k"]),
         helper.make_tensor_value_info("ids", TensorProto.INT64, ["rows", "k"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    model.ir_version = 10
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def host_finish(logits: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The runtime's host path (runtime/fill_mask.py _host_top_k), row by row as it runs."""
    from polyglot_onnx.runtime.fill_mask import _host_top_k

    return [_host_top_k(row, k, None) for row in logits]


def median_ms(fn: Any, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def micro(vocabs: list[int], rows: list[int], k: int, threads: int, rounds: int) -> list[dict[str, Any]]:
    session = finish_graph(threads)
    out = []
    for vocab in vocabs:
        for n in rows:
            logits = np.random.default_rng(0).standard_normal((n, vocab), dtype=np.float32) * 4
            feeds = {"logits": logits, "k": np.array([k], np.int64)}
            ids = session.run(None, feeds)[1]
            host = host_finish(logits, k)
            agree = all(np.array_equal(i, h[1]) for i, h in zip(ids, host))
            host_ms, graph_ms = [], []
            for _ in range(rounds):  # interleaved: both see the same machine state
                host_ms.append(median_ms(lambda x=logits: host_finish(x, k), 1))
                graph_ms.append(median_ms(lambda f=feeds: session.run(None, f), 1))
            row = {"vocab": vocab, "rows": n, "k": k, "host_ms": float(np.median(host_ms)),
                   "graph_ms": float(np.median(graph_ms)), "same_ids": agree}
            row["saved_ms"] = row["host_ms"] - row["graph_ms"]
            out.append(row)
            print(f"vocab {vocab:>7,} rows {n:>3}: host {row['host_ms']:8.2f} ms  graph {row['graph_ms']:7.2f} ms  "
                  f"same ids {agree}")
    return out


def end_to_end(package: str, threads: int, rounds: int) -> list[dict[str, Any]]:
    """Whole FillMask calls on ``package``: in-graph top k vs the host path (logits copied out)."""
    from polyglot_onnx import FillMask
    from polyglot_onnx.runtime.engine import Engine

    fm = FillMask.load(package, provider="cpu", threads=threads)
    mask = fm.mask_token
    words = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "and", "keeps", "running"]
    out = []
    for batch, length in ((1, 128), (64, 128)):
        text = " ".join((words * 40)[: max(length - 8, 1)])
        cut = text.split()
        cut[len(cut) // 2] = mask
        texts = [" ".join(cut)] * batch
        fm(texts[:1])  # warm-up
        timings: dict[str, list[float]] = {"graph": [], "host": []}
        for _ in range(rounds):
            for path in ("graph", "host"):
                Engine.top_k_in_graph = property(lambda self, p=path: p == "graph")  # type: ignore[method-assign]
                timings[path].append(median_ms(lambda t=texts, b=batch: fm(t, top_k=5, batch_size=b), 1))
        row = {"batch": batch, "tokens": length, **{f"{p}_ms": float(np.median(v)) for p, v in timings.items()}}
        out.append(row)
        print(f"fill-mask b{batch} x {length}: graph {row['graph_ms']:.1f} ms  host {row['host_ms']:.1f} ms")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", default="119547,256000")
    parser.add_argument("--rows", default="1,8,64")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--package", default=None)
    parser.add_argument("--out", default="benchmarks/results/topk_head")
    args = parser.parse_args()
    import onnxruntime as ort

    from polyglot_onnx.bench.machine import machine_facts

    result: dict[str, Any] = {
        "command": "python benchmarks/topk_head.py " + " ".join(
            f"--{k} {v}" for k, v in (("vocab", args.vocab), ("rows", args.rows), ("k", args.k),
                                      ("threads", args.threads), ("rounds", args.rounds)))
        + (" --package PKG" if args.package else ""),
        "machine": machine_facts(args.threads, "cpu"),
        "onnxruntime": ort.__version__,
        "python": platform.python_version(),
        "micro": micro([int(v) for v in args.vocab.split(",")], [int(r) for r in args.rows.split(",")], args.k,
                       args.threads, args.rounds),
    }
    if args.package:
        result["fill_mask"] = end_to_end(args.package, args.threads, max(3, args.rounds // 3))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "topk_head.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
