"""CLI: JSON outputs, progress on export, one-line errors with a non-zero exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import attention_nodes
from polyglot_onnx.catalog import CATALOG, get_spec
from polyglot_onnx.errors import ModelNotFoundError


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "polyglot_onnx", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_fill_mask_json(tiny_models):
    res = cli("fill-mask", str(tiny_models["tiny-modernbert"].package), "Paris est la <mask> de la France.", "--json", "--top-k", "2")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["provider"] == "CPUExecutionProvider" and data["variant"] == "fp32"
    assert len(data["results"]) == 1 and len(data["results"][0]) == 2
    assert set(data["results"][0][0]) == {"score", "token", "token_str", "sequence"}


def test_embed_json_sentence_and_word(tiny_models):
    pkg = str(tiny_models["tiny-bert"].package)
    res = cli("embed", pkg, "--json", "Hello world", "Bonjour le monde")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert len(data["embeddings"]) == 2 and len(data["embeddings"][0]) == 64
    res = cli("embed", pkg, "--output", "word", "--json", "Hello world")
    assert json.loads(res.stdout)["embeddings"][0]["words"] == ["Hello", "world"]


def test_info(tiny_models):
    res = cli("info", str(tiny_models["tiny-modernbert"].package))
    assert res.returncode == 0
    assert "modernbert" in res.stdout and "validated against pytorch" in res.stdout
    data = json.loads(cli("info", str(tiny_models["tiny-modernbert"].package), "--json").stdout)
    assert data["variants"]["fp32"]["op_counts"]["Attention"] == attention_nodes(tiny_models["tiny-modernbert"])


def test_export_shows_progress(tiny_models, tmp_path):
    res = cli("export", str(tiny_models["tiny-bert"].checkpoint), "--out", str(tmp_path / "p"))
    assert res.returncode == 0, res.stderr
    assert "[1/5]" in res.stderr and "[5/5]" in res.stderr and "fusion-check" in res.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (("info", "/nonexistent/pkg"), "not a directory"),
        (("export", "nope", "--out", "/tmp/x"), "neither a checkpoint directory"),
        (("export", "mmbert-small", "--out", "/tmp/x"), "cannot load 'jhu-clsp/mmBERT-small' from the Hugging Face hub"),
    ],
)
def test_errors_are_one_line(args, message):
    res = cli(*args, env={"HF_HUB_OFFLINE": "1"})
    assert res.returncode == 1
    errors = [l for l in res.stderr.splitlines() if l.startswith("polyglot-onnx: error:")]
    assert len(errors) == 1 and message in errors[0]
    assert "Traceback" not in res.stderr


def test_fill_mask_error_exit(tiny_models):
    res = cli("fill-mask", str(tiny_models["tiny-bert"].package), "no mask")
    assert res.returncode == 1 and "has no [MASK] token" in res.stderr and "Traceback" not in res.stderr


def test_catalog_facts():
    assert {"mbert-cased", "mmbert-small", "mmbert-base"} <= set(CATALOG)  # issue 15 adds neighbours
    mbert, small, base = get_spec("mbert-cased"), get_spec("mmbert-small"), get_spec("mmbert-base")
    assert (mbert.num_layers, mbert.hidden_size, mbert.vocab_size, mbert.max_length, mbert.mask_token) == (12, 768, 119547, 512, "[MASK]")
    assert (small.num_layers, small.hidden_size, small.num_heads, small.intermediate_size) == (22, 384, 6, 1152)
    assert (base.hidden_size, base.num_heads, base.vocab_size, base.max_length, base.mask_token) == (768, 12, 256000, 8192, "<mask>")
    assert base.local_window == 128 and base.global_every == 3
    assert all(get_spec(n).default_pooling == "mean" for n in ("mbert-cased", "mmbert-small", "mmbert-base"))
    # the error lists every catalog name, sorted
    with pytest.raises(ModelNotFoundError, match="known names are " + ", ".join(sorted(CATALOG))):
        get_spec("xlmr")
