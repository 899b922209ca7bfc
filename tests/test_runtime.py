"""Runtime: parity with transformers and PyTorch, batching, providers, and every bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import sample_lines
from polyglot_onnx import Embedder, FillMask, TokenEmbeddings, WordEmbeddings
from polyglot_onnx.errors import InputError, PackageError, PolyglotError, ProviderError, TruncationWarning


def _pipeline(tiny):
    from transformers import pipeline

    return pipeline("fill-mask", model=str(tiny.checkpoint), device="cpu")


def _assert_same_predictions(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a["token"] == b["token"] and a["token_str"] == b["token_str"]
        assert a["sequence"] == b["sequence"]
        assert a["score"] == pytest.approx(b["score"], rel=1e-4, abs=1e-7)


def test_fill_mask_matches_transformers_pipeline(mlm):
    fm = FillMask.load(mlm.package, provider="cpu")
    pipe = _pipeline(mlm)
    m = fm.mask_token
    single = f"Paris est la {m} de la France."
    _assert_same_predictions(fm(single, top_k=5), pipe(single, top_k=5))
    # several inputs, one of them with two masks: same nesting as the pipeline
    texts = [f"Der Hund spielt im {m} mit einem Ball.", f"{m} — столица {m}.", f"東京は日本の{m}です。"]
    ours, theirs = fm(texts, top_k=3), pipe(texts, top_k=3)
    assert isinstance(ours[1][0], list) and len(ours[1]) == 2
    _assert_same_predictions(ours[0], theirs[0])
    for a, b in zip(ours[1], theirs[1]):
        _assert_same_predictions(a, b)
    _assert_same_predictions(ours[2], theirs[2])


def test_fill_mask_targets_match_pipeline(mlm):
    fm = FillMask.load(mlm.package, provider="cpu")
    pipe = _pipeline(mlm)
    text = f"Roma è famosa per il {fm.mask_token}."
    vocab = fm.engine.text.tokenizer.get_vocab()
    targets = [t for t in sorted(vocab) if t.isalpha() and len(t) > 3][:4]
    ours = fm(text, targets=targets, top_k=10)
    assert len(ours) == 4 and {p["token_str"] for p in ours} <= set(targets) | {t.lstrip("▁") for t in targets}
    _assert_same_predictions(ours, pipe(text, targets=targets, top_k=10))


def test_sentence_embeddings_match_pytorch_at_every_length(mlm, torch_reference):
    emb = Embedder.load(mlm.package, provider="cpu")
    long_text = " ".join(sample_lines())  # longer than the window and than the model maximum
    texts = [sample_lines(1)[0], " ".join(sample_lines(6)), " ".join(sample_lines(20)), long_text]
    with pytest.warns(TruncationWarning):
        ours = emb.encode(texts, pooling="mean", normalize=False, batch_size=4)  # one padded batch
    for text, vec in zip(texts, ours):
        ref = torch_reference(mlm.name, text).mean(axis=0)
        cos = float(vec @ ref / (np.linalg.norm(vec) * np.linalg.norm(ref)))
        assert cos >= 0.9999, (mlm.name, len(text), cos)
        np.testing.assert_allclose(vec, ref, atol=1e-4)


def test_batching_restores_order_and_is_batch_invariant(mlm):
    emb = Embedder.load(mlm.package, provider="cpu")
    texts = sample_lines(24)
    one_by_one = emb.encode(texts, batch_size=1)
    batched = emb.encode(texts, batch_size=8)
    reversed_ = emb.encode(texts[::-1], batch_size=32)
    np.testing.assert_allclose(batched, one_by_one, atol=2e-5)
    np.testing.assert_allclose(reversed_[::-1], one_by_one, atol=2e-5)
    assert batched.shape == (24, emb.dimension) and batched.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


def test_cls_pooling_is_the_first_token(mlm, torch_reference):
    emb = Embedder.load(mlm.package, provider="cpu")
    text = sample_lines(3)[2]
    vec = emb.encode([text], pooling="cls", normalize=False)[0]
    np.testing.assert_allclose(vec, torch_reference(mlm.name, text)[0], atol=1e-4)


def test_token_and_word_outputs(mlm, torch_reference):
    emb = Embedder.load(mlm.package, provider="cpu")
    text = "Le petit garçon a mangé une pomme rouge."
    tokens = emb.encode([text, "x"], output="token", normalize=False)
    assert isinstance(tokens[0], TokenEmbeddings) and len(tokens) == 2
    enc = emb.engine.text.tokenizer.encode(text)
    assert tokens[0].tokens == enc.tokens and tokens[0].offsets == [tuple(o) for o in enc.offsets]
    np.testing.assert_allclose(tokens[0].embeddings, torch_reference(mlm.name, text), atol=1e-4)

    words = emb.encode([text], output="word", normalize=False)[0]
    assert isinstance(words, WordEmbeddings)
    assert "".join(words.words).replace(" ", "") == text.replace(" ", "")
    assert len(words.words) == len(words.offsets) == words.embeddings.shape[0]
    for word, (start, end) in zip(words.words, words.offsets):
        assert text[start:end].strip() == word
    # the pooled vector of a word is the mean of its pieces
    first_word = [i for i, w in enumerate(enc.word_ids) if w == enc.word_ids[1]]
    np.testing.assert_allclose(words.embeddings[0], tokens[0].embeddings[first_word].mean(0), atol=1e-6)
    normed = emb.encode([text], output="word")[0].embeddings
    np.testing.assert_allclose(np.linalg.norm(normed, axis=1), 1.0, atol=1e-5)


def test_embedding_only_package(tiny_models):
    pkg = tiny_models["tiny-encoder"].package
    emb = Embedder.load(pkg, provider="cpu")
    assert emb.encode(["hello"]).shape == (1, 64)
    with pytest.raises(PolyglotError, match="without a masked-LM head"):
        FillMask.load(pkg)


def test_reports_the_provider_that_runs(mlm):
    fm = FillMask.load(mlm.package, provider="auto")
    import onnxruntime as ort

    expected = "CUDAExecutionProvider" if "CUDAExecutionProvider" in ort.get_available_providers() else "CPUExecutionProvider"
    assert fm.provider == expected and fm.variant == "fp32"
    assert fm.engine.describe()["provider"] == expected


def test_cuda_without_the_provider_is_an_error_not_a_fallback(tiny_models):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here: the refusal path cannot be exercised")
    with pytest.raises(ProviderError, match="CPUExecutionProvider") as info:
        Embedder.load(tiny_models["tiny-bert"].package, provider="cuda")
    assert "onnxruntime-gpu" in str(info.value)


@pytest.mark.cuda
def test_cuda_matches_cpu(mlm):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("CUDAExecutionProvider not available (install onnxruntime-gpu on a CUDA machine)")
    texts = sample_lines(8)
    gpu = Embedder.load(mlm.package, provider="cuda")
    assert gpu.provider == "CUDAExecutionProvider"
    np.testing.assert_allclose(gpu.encode(texts), Embedder.load(mlm.package, provider="cpu").encode(texts), atol=1e-4)


@pytest.mark.cuda
def test_cuda_fill_mask_top_k_in_graph_matches_cpu(mlm):
    """The graph's own top k (export/topk.py) runs on the device: same words, same scores as on the CPU."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("CUDAExecutionProvider not available (install onnxruntime-gpu on a CUDA machine)")
    gpu = FillMask.load(mlm.package, provider="cuda", variant="fp32")
    cpu = FillMask.load(mlm.package, provider="cpu", variant="fp32")
    assert gpu.engine.top_k_in_graph
    texts = [f"{line} {mlm.mask_token} ." for line in sample_lines(6)]
    for g, c in zip(gpu(texts, top_k=5), cpu(texts, top_k=5)):
        assert [p["token"] for p in g] == [p["token"] for p in c]
        np.testing.assert_allclose([p["score"] for p in g], [p["score"] for p in c], atol=1e-4)


# ---- bad input -------------------------------------------------------------------------------


def test_fill_mask_without_mask_token(bert_fm):
    with pytest.raises(InputError, match=r"input 1 has no \[MASK\] token"):
        bert_fm(["a [MASK] b", "no mask here"])
    with pytest.raises(InputError, match=r"no \[MASK\]"):
        bert_fm("wrong mask <mask> token")


@pytest.mark.parametrize("bad, message", [([], "empty list"), (["ok", 3], r"\[1\] is int"), (b"x", "bytes"), (None, "string or a list")])
def test_bad_text_inputs(bert_emb, bert_fm, bad, message):
    with pytest.raises(InputError, match=message):
        bert_emb.encode(bad)
    with pytest.raises(InputError, match=message):
        bert_fm(bad)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"pooling": "max"}, "unknown pooling"), ({"output": "doc"}, "unknown output"), ({"batch_size": 0}, "batch_size")],
)
def test_bad_encode_options(bert_emb, kwargs, message):
    with pytest.raises(InputError, match=message):
        bert_emb.encode(["hello"], **kwargs)


def test_bad_top_k_and_targets(bert_fm):
    with pytest.raises(InputError, match="top_k"):
        bert_fm("a [MASK]", top_k=0)
    with pytest.raises(InputError, match="targets"):
        bert_fm("a [MASK]", targets=[])


def test_truncation_warns_with_the_number_of_dropped_tokens(bert_emb, tiny_models, caplog):
    """One constant warning per call (the warnings registry cannot grow); per-text counts go to the log."""
    import logging

    from tokenizers import Tokenizer

    text = " ".join(sample_lines())
    untruncated = Tokenizer.from_file(str(tiny_models["tiny-bert"].package / "tokenizer.json"))
    dropped = len(untruncated.encode(text).ids) - bert_emb.engine.text.max_length
    assert dropped > 0
    with caplog.at_level(logging.INFO, logger="polyglot_onnx"):
        with pytest.warns(TruncationWarning, match="maximum of 256 tokens were truncated") as record:
            vec = bert_emb.encode([text, "short", text + " x"])
    assert len(record) == 1 and vec.shape == (3, 64)
    assert f"text 0 is longer than the model maximum of 256 tokens: {dropped} tokens were dropped" in caplog.text


def test_not_a_package(tmp_path):
    with pytest.raises(PackageError, match="not a polyglot-onnx package"):
        Embedder.load(tmp_path)
    with pytest.raises(PackageError, match="not a directory"):
        Embedder.load(tmp_path / "missing")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(PackageError, match="not valid JSON"):
        Embedder.load(tmp_path)


@pytest.fixture()
def package_copy(tiny_models, tmp_path):
    dst = tmp_path / "pkg"
    shutil.copytree(tiny_models["tiny-bert"].package, dst)
    return dst


def test_sha256_mismatch(package_copy):
    path = package_copy / "model.onnx"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(PackageError, match="does not match its sha256"):
        Embedder.load(package_copy)


def test_tokenizer_replaced(package_copy, tiny_models):
    shutil.copy(tiny_models["tiny-modernbert"].package / "tokenizer.json", package_copy / "tokenizer.json")
    with pytest.raises(PackageError, match="tokenizer.json is .* bytes, the manifest says"):  # its recorded size
        Embedder.load(package_copy)
    data = json.loads((package_copy / "manifest.json").read_text())
    data["tokenizer_size"] = (package_copy / "tokenizer.json").stat().st_size  # a forged size: the hash still fails
    (package_copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(PackageError, match="tokenizer.json does not match its sha256"):
        Embedder.load(package_copy)


def test_tokenizer_vocab_does_not_match_graph(package_copy, tiny_models):
    """Even with the manifest's checksum updated, a foreign tokenizer is caught by its vocab."""
    from polyglot_onnx.manifest import sha256_file

    shutil.copy(tiny_models["tiny-modernbert"].package / "tokenizer.json", package_copy / "tokenizer.json")
    data = json.loads((package_copy / "manifest.json").read_text())
    data["tokenizer_sha256"] = sha256_file(package_copy / "tokenizer.json")
    data["tokenizer_size"] = (package_copy / "tokenizer.json").stat().st_size
    (package_copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(PackageError, match="tokenizer.json has 1500 tokens but the graph's embedding table has 1200 rows"):
        Embedder.load(package_copy)


def test_missing_model_file_and_unknown_variant(package_copy):
    with pytest.raises(InputError, match="variant 'int8' is not in this package: it has fp32"):
        Embedder.load(package_copy, variant="int8")
    with pytest.raises(InputError, match="unknown provider"):
        Embedder.load(package_copy, provider="tpu")
    (package_copy / "model.onnx").unlink()
    with pytest.raises(PackageError, match="model.onnx is missing"):
        Embedder.load(package_copy)


def test_runtime_imports_no_heavy_packages():
    code = (
        "import sys\n"
        "from polyglot_onnx import FillMask, Embedder\n"
        "import polyglot_onnx.runtime, polyglot_onnx.cli\n"
        "print([m for m in ('torch', 'transformers', 'onnx', 'onnxscript', 'optimum') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_extra_padding_changes_nothing(mlm):
    """CUDA pads batches to a multiple of 8 for the fused kernels; the results must not move."""
    emb = Embedder.load(mlm.package, provider="cpu")
    fm = FillMask.load(mlm.package, provider="cpu")
    texts = sample_lines(5)
    masked = [f"{fm.mask_token} {texts[0]}", f"{texts[1]} {fm.mask_token}"]
    plain_vec, plain_tok, plain_fm = emb.encode(texts), emb.encode(texts, output="token"), fm(masked)
    emb.engine.text.pad_to_multiple = fm.engine.text.pad_to_multiple = 8
    ids, _ = emb.engine.text.pad(emb.engine.text.encode(texts))
    assert ids.shape[1] % 8 == 0
    np.testing.assert_allclose(emb.encode(texts), plain_vec, atol=1e-5)
    for a, b in zip(emb.encode(texts, output="token"), plain_tok):
        assert a.tokens == b.tokens
        np.testing.assert_allclose(a.embeddings, b.embeddings, atol=1e-5)
    for a, b in zip(fm(masked), plain_fm):
        assert [p["token"] for p in a] == [p["token"] for p in b]
