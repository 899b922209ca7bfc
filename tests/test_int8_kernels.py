"""int8 on every CPU: the AVX2 saturation emulated and proven absent, and batch-invariant results."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from polyglot_onnx.quantize.rowwise import WEIGHT_LEVELS, quantize_weight
from polyglot_onnx.quantize.saturation import (
    INT16_MAX,
    avx2_u8s8_matmul,
    check_graph,
    exact_u8s8_matmul,
    saturating_input,
    worst_pair_sum,
)

QUIET = {"show_progress": False}


def _old_recipe_weight(w: np.ndarray) -> np.ndarray:
    """onnxruntime's dynamic int8 weights: per channel, symmetric, 8-bit (the previous default)."""
    scale = np.abs(w).max(axis=0) / 127.0
    return np.clip(np.rint(w / scale), -127, 127).astype(np.int8)


@pytest.fixture(scope="module")
def weight() -> np.ndarray:
    """A float weight with two large same-sign neighbours in K, as trained and random layers have."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 16)).astype(np.float32) * 0.2
    w[10, 3], w[11, 3] = 0.9, 0.85  # the channel's largest values, side by side
    return w


def test_emulation_is_exact_below_the_limit_and_clips_pairs_above_it():
    a = np.array([[255, 255, 1, 2]], dtype=np.uint8)
    w = np.array([[127], [127], [3], [-4]], dtype=np.int8)
    exact = exact_u8s8_matmul(a, w)
    assert exact[0, 0] == 255 * 254 + 3 - 8
    # the first pair saturates at 32767 in 16 bits; the second pair is added exactly in 32 bits
    assert avx2_u8s8_matmul(a, w)[0, 0] == INT16_MAX + 3 - 8
    # odd K: the kernel pads K with a zero
    assert avx2_u8s8_matmul(a[:, :3], w[:3])[0, 0] == INT16_MAX + 3


def test_old_recipe_saturates_on_a_constructed_input_and_the_default_cannot(weight):
    old = _old_recipe_weight(weight)
    row = saturating_input(old)
    assert row is not None and worst_pair_sum(old) > INT16_MAX
    a = np.vstack([row, np.full(64, 128, np.uint8)])
    assert (avx2_u8s8_matmul(a, old) != exact_u8s8_matmul(a, old)).any()

    new, _ = quantize_weight(weight)
    assert np.abs(new).max() <= WEIGHT_LEVELS
    assert saturating_input(new) is None and worst_pair_sum(new) <= INT16_MAX
    rng = np.random.default_rng(1)
    adversarial = np.vstack([np.full(64, 255, np.uint8), rng.integers(0, 256, (64, 64), dtype=np.uint8)])
    adversarial[1, :] = np.where(new[:, 3] > 0, 255, 0)  # every positive weight of one column at 255
    np.testing.assert_array_equal(avx2_u8s8_matmul(adversarial, new), exact_u8s8_matmul(adversarial, new))


def test_onnxruntime_kernel_on_this_cpu_matches_the_emulation_or_exact_math(weight):
    """The emulation is the real kernel's arithmetic: onnxruntime's MatMulInteger gives the
    saturated result on AVX2-only CPUs and the exact one on VNNI / ARM dot-product CPUs."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from polyglot_onnx.runtime.cpu import detect_cpu

    old = _old_recipe_weight(weight)
    a = np.vstack([saturating_input(old), np.full(64, 7, np.uint8)])
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [2, 64])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [2, 16])],
        [numpy_helper.from_array(old, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"a": a})[0]
    cpu = detect_cpu()
    expected = avx2_u8s8_matmul(a, old) if cpu.saturating else exact_u8s8_matmul(a, old)
    np.testing.assert_array_equal(y, expected, err_msg=f"kernel class {cpu.int8_kernel_class}")


def test_graph_check_proves_the_default_safe_and_flags_the_old_recipe(quantized, tiny_models, tmp_path):
    from polyglot_onnx.manifest import read_manifest
    from polyglot_onnx.quantize import QuantizeOptions, quantize_package
    from polyglot_onnx.quantize.graphs import load_model

    pkg = quantized["tiny-bert"]
    report = check_graph(load_model(pkg / "model.int8.onnx"))
    assert report.checked > 0 and report.safe and report.worst <= INT16_MAX
    assert read_manifest(pkg).variants["int8"].extra["avx2_saturation"]["safe"] is True
    assert read_manifest(pkg).variants["int8"].described().batch_invariant is True

    old = tmp_path / "old"
    shutil.copytree(tiny_models["tiny-bert"].package, old)
    manifest = quantize_package(old, "int8-dynamic", QuantizeOptions(drift=False, **QUIET))
    assert manifest.variants["int8-dynamic"].extra["avx2_saturation"]["safe"] is False
    assert manifest.variants["int8-dynamic"].described().batch_invariant is False
    assert not check_graph(load_model(old / "model.int8-dynamic.onnx")).safe


TEXTS = [
    "Hola, ¿cómo estás hoy?",
    "Das ist ein ziemlich langer deutscher Satz über das Wetter in Berlin und in München.",
    "東京は日本の首都です。",
    "Привет",
    "The quick brown fox jumps over the lazy dog while the cat sleeps on the warm windowsill all day.",
    "مرحبا بالعالم",
]


def _alone_and_batched(pkg: Path, variant: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from polyglot_onnx import Embedder

    emb = Embedder.load(pkg, provider="cpu", variant=variant)
    alone = np.concatenate([emb.encode([t], normalize=False) for t in TEXTS])
    batched = emb.encode(TEXTS, batch_size=len(TEXTS), normalize=False)
    emb.engine.text.pad_to_multiple = 64  # extra padding on every row
    padded = emb.encode(list(reversed(TEXTS)), batch_size=3, normalize=False)[::-1]
    return alone, batched, padded


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-modernbert"])
@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_same_text_same_vector_whatever_its_batch_and_padding(quantized, name, variant):
    alone, batched, padded = _alone_and_batched(quantized[name], variant)
    np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-6)
    np.testing.assert_allclose(padded, alone, rtol=0, atol=1e-6)


def test_the_per_batch_recipe_is_not_batch_invariant_and_says_so(tiny_models, tmp_path):
    """The measured reason for the default: onnxruntime's dynamic int8 changes with the batch."""
    from polyglot_onnx import Embedder
    from polyglot_onnx.quantize import QuantizeOptions, quantize_package

    pkg = tmp_path / "dyn"
    shutil.copytree(tiny_models["tiny-bert"].package, pkg)
    quantize_package(pkg, "int8-dynamic", QuantizeOptions(drift=False, **QUIET))
    alone, batched, _ = _alone_and_batched(pkg, "int8-dynamic")
    assert np.abs(batched - alone).max() > 1e-4
    assert Embedder.load(pkg, provider="cpu", variant="int8-dynamic").describe()["batch_invariant"] is False
