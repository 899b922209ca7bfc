"""A variant's facts (provider, batch invariance, auto rank, drift gate) live in its manifest entry, written from
the one recipe table; the runtime, drift, bench and CLI read them there."""

from __future__ import annotations

from dataclasses import replace

import pytest

from polyglot_onnx import manifest as mf
from polyglot_onnx.errors import InputError
from polyglot_onnx.quantize.recipes import RECIPES, best_for
from polyglot_onnx.runtime.engine import batch_invariant
from polyglot_onnx.runtime.package import auto_order, choose_variant


def test_quantize_and_export_write_each_variants_facts(quantized):
    manifest = mf.read_manifest(quantized["tiny-bert"])
    assert manifest.variants["fp32"].facts == mf.fp32_facts()
    for name in ("int8", "fp16"):
        assert manifest.variants[name].facts == RECIPES[name].facts
    assert auto_order(manifest, "cpu") == ["int8", "fp32"] and auto_order(manifest, "cuda") == ["fp16", "fp32"]


def test_a_new_recipe_row_is_all_it_takes(quantized):
    """A variant the runtime has never heard of, described by its facts, is ranked, gated and refused by them."""
    manifest = mf.read_manifest(quantized["tiny-bert"])
    int8 = manifest.variants["int8"]
    evidence = {"passed": True, "graph_sha256": int8.files[0].sha256}
    novel = replace(int8, name="int4-blocks", facts=mf.VariantFacts("cpu", False, -1, {"sentence_cosine_min": 0.9}),
                    validation={"drift": evidence})
    gpu_only = replace(int8, name="fp8", facts=mf.VariantFacts("cuda", True, -1, {}), validation={"drift": evidence})
    manifest = replace(manifest, variants=manifest.variants | {"int4-blocks": novel, "fp8": gpu_only})
    assert choose_variant(manifest, "auto", "cpu").name == "int4-blocks"
    assert choose_variant(manifest, "auto", "cuda").name == "fp8"
    assert batch_invariant(novel) is False and batch_invariant(manifest.variants["int8"]) is True
    with pytest.raises(InputError, match=r"^fp8 is a CUDA variant and is slow or unsupported on CPU: use "
                                         r"variant='int4-blocks' or 'int8' or 'fp32' there$"):
        choose_variant(manifest, "fp8", "cpu")


def test_packages_without_facts_keep_their_meaning(quantized):
    """Packages written before the facts were recorded: the names mean what they meant."""
    manifest = mf.read_manifest(quantized["tiny-bert"])
    old = replace(manifest, variants={k: replace(v, facts=None) for k, v in manifest.variants.items()})
    assert auto_order(old, "cpu") == ["int8", "fp32"] and auto_order(old, "cuda") == ["fp16", "fp32"]
    assert old.variants["fp16"].described().provider == "cuda"


def test_the_bench_and_the_cli_read_the_table():
    from polyglot_onnx.bench.suite import DEFAULT_VARIANTS
    from polyglot_onnx.cli import build_parser

    assert best_for("cpu") == "int8" and best_for("cuda") == "fp16"
    assert DEFAULT_VARIANTS[("polyglot", "cpu")] == ("fp32", "int8") and DEFAULT_VARIANTS[("polyglot", "cuda")] == ("fp16",)
    help_text = build_parser()._subparsers._group_actions[0].choices["quantize"].format_help()  # noqa: SLF001
    assert all(name in help_text for name in RECIPES)
