"""Sentence-transformers fidelity: the modules.json pipeline, prompts, Matryoshka and quantized embeddings."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import CORPUS, sample_lines
from polyglot_onnx import Embedder
from polyglot_onnx.errors import ExportError, InputError
from polyglot_onnx.manifest import read_manifest

pytest.importorskip("sentence_transformers", reason="the test extra installs sentence-transformers")

TEXTS = ["Le chat dort.", " ".join(sample_lines(4)), "東京は日本の首都", "Ok", sample_lines(9)[8]]



@pytest.fixture(scope="module")
def st_model(labse):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(labse[0]), device="cpu")


@pytest.fixture(scope="module")
def emb(labse):
    return Embedder.load(labse[1], provider="cpu")


def test_manifest_records_pipeline_and_prompts(labse):
    model = read_manifest(labse[1]).model
    assert model.sentence_pipeline == ["Pooling(cls)", "Dense(64->64, tanh)", "Normalize"]
    assert model.default_pooling == "sentence-transformers"
    assert model.prompts == {"query": "query: ", "passage": "passage: "} and model.default_prompt_name == "query"


@pytest.mark.parametrize("kwargs", [{}, {"prompt_name": "passage"}, {"prompt": "x: "}, {"prompt": ""}])
def test_equals_sentence_transformers_encode(emb, st_model, kwargs):
    """Dense and Normalize included; the default prompt, a named one, an explicit one and none."""
    for normalize in (False, True):
        theirs = st_model.encode(TEXTS, normalize_embeddings=normalize, **kwargs)
        ours = emb.encode(TEXTS, normalize=normalize, batch_size=5, **kwargs)
        np.testing.assert_allclose(ours, theirs, atol=1e-6)
        cos = (ours * theirs).sum(-1) / (np.linalg.norm(ours, axis=-1) * np.linalg.norm(theirs, axis=-1))
        assert cos.min() > 0.999999
    assert not np.allclose(emb.encode(TEXTS[:2], prompt=""), emb.encode(TEXTS[:2]), atol=1e-3)  # prompt pooled


def test_pooling_choices_and_prompt_errors(emb):
    with pytest.raises(InputError, match="unknown pooling 'mean' for this package"):
        emb.encode("x", pooling="mean")
    assert emb.encode("x", pooling="cls").shape == (64,)
    with pytest.raises(InputError, match="unknown prompt name 'doc'.*passage, query"):
        emb.encode("x", prompt_name="doc")


def test_matryoshka_dimensions(emb, st_model):
    theirs = st_model.encode(TEXTS, truncate_dim=16, normalize_embeddings=True)
    ours = emb.encode(TEXTS, dimensions=16)
    assert ours.shape == (5, 16)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    for bad in (0, 65, 2.5):
        with pytest.raises(InputError, match="dimensions must be an integer from 1 to 64"):
            emb.encode("x", dimensions=bad)


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_quantized_embeddings_bit_identical(emb, st_model, precision):
    from sentence_transformers.util.quantization import quantize_embeddings

    from polyglot_onnx.runtime.sentence_options import quantize

    rng = np.random.default_rng(0)
    floats = rng.standard_normal((40, 64)).astype(np.float32)
    ranges = np.vstack([floats.min(0) - 0.1, floats.max(0) + 0.2]).astype(np.float32)
    for r in (None, ranges) if precision.endswith("int8") else (None,):
        ref = quantize_embeddings(floats, precision, ranges=r)
        got = quantize(floats, precision, r)
        assert got.dtype == ref.dtype and np.array_equal(got, ref)
    # through encode: the same vectors the model gives, then the same buckets
    floats = emb.encode(TEXTS, normalize=False)
    ours = emb.encode(TEXTS, normalize=False, precision=precision)
    assert np.array_equal(ours, quantize_embeddings(floats, precision))
    theirs = st_model.encode(TEXTS, precision=precision)
    assert theirs.dtype == ours.dtype and theirs.shape == ours.shape
    assert np.abs(theirs.astype(np.int16) - ours.astype(np.int16)).max() <= 1  # float noise of 1e-7 at a bucket edge


def test_bad_precision_inputs(emb):
    with pytest.raises(InputError, match="unknown precision 'int4'"):
        emb.encode(TEXTS, precision="int4")
    with pytest.raises(InputError, match="int8 needs ranges"):
        emb.encode("one text", precision="int8")
    with pytest.raises(InputError, match="ranges must be a \\(2, 64\\) array"):
        emb.encode(TEXTS, precision="int8", ranges=np.zeros((2, 3)))
    with pytest.raises(InputError, match="sentence embeddings only"):
        emb.encode("x", output="token", dimensions=8)


@pytest.mark.parametrize(
    "modes", ["cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken", ["mean", "max", "lasttoken"]]
)
def test_each_pooling_mode_equals_sentence_transformers(tmp_path, modes):
    """The exported head against sentence-transformers' own Pooling, Dense and Normalize on a padded batch."""
    import torch
    from sentence_transformers.base.modules import Dense, Normalize
    from sentence_transformers.sentence_transformer.modules import Pooling

    from polyglot_onnx.export.st_modules import build_head, read_pipeline
    from polyglot_onnx.export.tiny import write_sentence_transformers_files

    torch.manual_seed(0)
    n_modes = 1 if isinstance(modes, str) else len(modes)
    weight, bias = torch.randn(24, 16 * n_modes), torch.randn(24)
    write_sentence_transformers_files(tmp_path, 16, modes, [(weight, bias, "GELU")], normalize=True)
    head = build_head(read_pipeline(tmp_path))
    hidden = torch.randn(3, 7, 16)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] + [0] * 6])
    pooling = Pooling(16, pooling_mode=modes)
    dense = Dense(16 * n_modes, 24, activation_function=torch.nn.GELU())
    dense.linear.load_state_dict({"weight": weight, "bias": bias})
    features = {"token_embeddings": hidden, "attention_mask": mask}
    with torch.no_grad():
        ref = Normalize()(dense(pooling(features)))["sentence_embedding"]
        got = head(hidden, mask)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-6)


def test_unsupported_modules_are_named(tmp_path):
    from polyglot_onnx.export.st_modules import read_pipeline
    from polyglot_onnx.export.tiny import write_sentence_transformers_files

    write_sentence_transformers_files(tmp_path, 16, "mean")
    cfg = tmp_path / "1_Pooling" / "config.json"
    cfg.write_text(json.dumps({"pooling_mode": "mean", "include_prompt": False}))
    with pytest.raises(ExportError, match="include_prompt=false .* not supported"):
        read_pipeline(tmp_path)
    modules = json.loads((tmp_path / "modules.json").read_text())
    modules[1]["type"] = "sentence_transformers.models.LSTM"
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ExportError, match="module 'LSTM' is not supported"):
        read_pipeline(tmp_path)


def test_cli_embed_with_prompt_name_and_dimensions(labse, st_model):
    res = subprocess.run(
        [sys.executable, "-m", "polyglot_onnx", "embed", str(labse[1]), "Le chat dort.", "--prompt-name", "passage",
         "--dimensions", "8", "--json", "--provider", "cpu"],
        check=False, capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    got = np.asarray(json.loads(res.stdout)["embeddings"])
    ref = st_model.encode(["Le chat dort."], prompt_name="passage", truncate_dim=8, normalize_embeddings=True)
    np.testing.assert_allclose(got, ref, atol=2e-6)


@pytest.mark.slow
def test_e5_like_all_pooling_modes_and_dense_width_through_onnx(tmp_path):
    """XLM-R encoder, four pooling modes concatenated, Dense 256 -> 32: width, canary and values through ONNX."""
    import os

    if not os.environ.get("POLYGLOT_SLOW"):
        pytest.skip("one more export (~20 s on 2 cores): set POLYGLOT_SLOW=1 to run it")
    from sentence_transformers import SentenceTransformer

    from polyglot_onnx.export import ExportOptions, export_package
    from polyglot_onnx.export.families.xlm_roberta import build_tiny_e5_like

    modes = ["max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"]
    ckpt = build_tiny_e5_like(tmp_path / "ckpt", CORPUS, pooling=modes, dense_out=32)
    manifest = export_package(str(ckpt), tmp_path / "pkg", ExportOptions(show_progress=False))
    assert manifest.model.embedding_dim == 32 and manifest.model.default_prompt_name is None
    assert manifest.model.sentence_pipeline == ["Pooling(" + "+".join(modes) + ")", "Dense(256->32, identity)"]
    emb = Embedder.load(tmp_path / "pkg", provider="cpu")
    st = SentenceTransformer(str(ckpt), device="cpu")
    for kwargs in ({}, {"prompt_name": "query"}):
        ours = emb.encode(TEXTS, normalize=False, **kwargs)
        assert ours.shape == (5, 32) and emb.dimension == 32
        np.testing.assert_allclose(ours, st.encode(TEXTS, **kwargs), atol=2e-5)
    res = subprocess.run([sys.executable, "-m", "polyglot_onnx", "verify", str(tmp_path / "pkg")],
                         check=False, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
