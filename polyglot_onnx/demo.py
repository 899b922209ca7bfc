"""The README's main job: export -> quantize (+ drift) -> fill-mask -> embed, on one model or the tiny defaults."""

from __future__ import annotations

from pathlib import Path

import numpy as np

MASKED = [
    "Paris is the {mask} of France.",
    "Berlin ist die {mask} von Deutschland.",
    "Москва — {mask} России.",
    "東京は日本の{mask}です。",
]
PARALLEL = [
    "The weather is nice today.",
    "Il fait beau aujourd'hui.",
    "Das Wetter ist heute schön.",
    "今日は天気がいいです。",
    "The stock market fell sharply.",
]


def _checkpoints(model: str | None, out: Path, corpus: Path | None) -> list[tuple[str, str]]:
    if model is not None:
        return [(Path(model).name if Path(model).is_dir() else model.replace("/", "--"), model)]
    from polyglot_onnx.export.families import TINY_MODELS
    from polyglot_onnx.export.tiny import default_corpus

    corpus = corpus or default_corpus()
    built = []
    for name, build in TINY_MODELS.items():
        print(f"building the embedded default checkpoint {name} (random weights, trained tokenizer)")
        built.append((name, str(build(out / "checkpoints" / name, corpus))))
    return built


def run_demo(model: str | None, out: Path, corpus: Path | None = None, random_weights: bool = False) -> list[Path]:
    """Export each model, add int8 / fp16 with their drift evidence, then show fill-mask
    predictions and a cosine-similarity matrix from the variant the runtime picks."""
    from polyglot_onnx.export import ExportOptions, export_package
    from polyglot_onnx.quantize import QuantizeOptions, quantize_package
    from polyglot_onnx.quantize.recipes import DEFAULT_VARIANTS
    from polyglot_onnx.runtime import Embedder, FillMask

    packages = []
    for name, source in _checkpoints(model, out, corpus):
        target = out / "packages" / name
        export_package(source, target, ExportOptions(overwrite=True, random_weights=random_weights))
        manifest = quantize_package(target, list(DEFAULT_VARIANTS), QuantizeOptions())
        packages.append(target)
        print(f"\n== {name}: {target}")
        for variant in manifest.variants.values():
            drift = variant.drift()
            verdict = "" if not drift else (
                f", drift vs fp32 on {drift['corpus']['texts']} texts in {drift['corpus']['languages']} languages: "
                f"{'PASS' if drift['passed'] else 'FAIL'} (sentence cosine p5 {drift['overall']['sentence_cosine_p5']:.5f})"
            )
            print(f"  {variant.name}: {variant.total_size / 1e6:.1f} MB{verdict}")
        if manifest.model.has_mlm_head:
            fm = FillMask.load(target)
            print(f"fill-mask ({fm.provider}, {fm.variant}):")
            for template in MASKED:
                text = template.format(mask=fm.mask_token)
                best = fm(text, top_k=3)
                print(f"  {text}  ->  " + ", ".join(f"{p['token_str']!r} {p['score']:.3f}" for p in best))
        emb = Embedder.load(target)
        vectors = emb.encode(PARALLEL)
        print(f"embeddings ({emb.provider}, {emb.variant}): {vectors.shape[0]} x {vectors.shape[1]}, cosine matrix:")
        sims = vectors @ vectors.T
        for text, row in zip(PARALLEL, np.round(sims, 3)):
            print(f"  {text[:28]:<28} " + " ".join(f"{x:6.3f}" for x in row))
    if model is None or random_weights:
        print("\n(random weights: the predictions are noise, the pipeline is the real one)")
    return packages
