"""Why the int8 LM head computes in int8: accuracy and speed of MatMulNBits accuracy_level 0 vs 4.

    python benchmarks/int8_head.py PACKAGE [--texts 200] [--out benchmarks/results/int8_head]

PACKAGE is a package with fp32 and int8 variants (e.g. the bench's mbert-cased package). The
int8 graph is run as built (accuracy_level 4: activations quantized per 64-value block, int8 dot
products) and with the attribute removed (level 0: onnxruntime dequantizes the whole uint8
[vocab, hidden] table to fp32 on every call). Both are compared with the fp32 graph on masked
copies of the built-in 24-language corpus: top-1 agreement, top-5 overlap, KL(fp32 || int8) of
the mask distribution, and the mask_logits call time. Writes int8_head.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _session(path: str, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _without_accuracy_level(src: Path, dst: Path) -> None:
    import onnx

    model = onnx.load(str(src))
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            kept = [a for a in node.attribute if a.name != "accuracy_level"]
            del node.attribute[:]
            node.attribute.extend(kept)
    onnx.save(model, str(dst))


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def compare(package: Path, texts: int, threads: int) -> dict[str, Any]:
    from tokenizers import Tokenizer

    from polyglot_onnx.manifest import read_manifest
    from polyglot_onnx.quantize.corpus import load_corpus

    manifest = read_manifest(package)
    tok = Tokenizer.from_file(str(package / "tokenizer.json"))
    mask_id = manifest.tokenizer.mask_token_id
    samples = [s.text for s in load_corpus(None).samples][:texts]
    with tempfile.TemporaryDirectory() as tmp:
        level0 = Path(tmp) / "model.int8.level0.onnx"
        _without_accuracy_level(package / manifest.variants["int8"].files[0].path, level0)
        sessions = {
            "fp32": _session(str(package / manifest.variants["fp32"].files[0].path), threads),
            "int8 level 4 (shipped)": _session(str(package / manifest.variants["int8"].files[0].path), threads),
            "int8 level 0": _session(str(level0), threads),
        }
        rng = np.random.default_rng(0)
        logits: dict[str, list[np.ndarray]] = {k: [] for k in sessions}
        seconds: dict[str, float] = dict.fromkeys(sessions, 0.0)
        for text in samples:
            ids = tok.encode(text).ids
            if len(ids) < 4:
                continue
            at = int(rng.integers(1, len(ids) - 1))
            ids[at] = mask_id
            batch = np.array([ids], dtype=np.int64)
            feeds = {"input_ids": batch, "attention_mask": np.ones_like(batch),
                     "mask_positions": np.array([at], dtype=np.int64)}
            for name, session in sessions.items():
                start = time.perf_counter()
                (out,) = session.run(["mask_logits"], feeds)
                seconds[name] += time.perf_counter() - start
                logits[name].append(out[0])
    ref = np.stack(logits["fp32"])
    p = _softmax(ref)
    result: dict[str, Any] = {"package": package.name, "texts": len(ref), "threads": threads,
                              "ms_per_call": {k: round(v / len(ref) * 1e3, 2) for k, v in seconds.items()}}
    for name in sessions:
        if name == "fp32":
            continue
        x = np.stack(logits[name])
        q = _softmax(x)
        top5 = [len(set(np.argsort(-a)[:5]) & set(np.argsort(-b)[:5])) / 5 for a, b in zip(x, ref)]
        result[name] = {
            "top1_agreement": round(float((x.argmax(-1) == ref.argmax(-1)).mean()), 4),
            "top5_overlap": round(float(np.mean(top5)), 4),
            "kl": float(np.mean(np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12)), -1))),
            "max_rel_logit_error": round(float(np.abs(x - ref).max() / np.abs(ref).max()), 5),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path)
    parser.add_argument("--texts", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/int8_head"))
    args = parser.parse_args()
    result = compare(args.package, args.texts, args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "int8_head.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
