"""A package is a trust boundary: corrupt packages, bounds, hostile text (issue 16).

Each corrupt-package case is one table row: a package from a stranger can only ever produce a typed
one-line error or correct, finite output. test_trust_io.py audits every open and the CLI's edges.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from corrupt_packages import (
    deep_manifest,
    drop_key,
    duplicate_entries,
    edit,
    external_data,
    graph_path,
    hardlinked_alias,
    huge_manifest,
    huge_tokenizer,
    nan_weights,
    newer_format,
    outside_copy,
    overlong_graph_tag,
    rename_output,
    set_key,
    swap_tokenizer,
    symlink_out,
    tokenizer_is_a_directory,
    unknown_keys,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import sample_lines
from polyglot_onnx import Embedder, FillMask
from polyglot_onnx.errors import InputError, NonFiniteOutputError, PackageError, TruncationWarning
from polyglot_onnx.manifest import read_manifest


def run_case(pkg: Path, action: str, verify: bool = True) -> object:
    if action == "info":
        return read_manifest(pkg)
    if action == "fill":
        return FillMask.load(pkg, provider="cpu", verify=verify)("Paris [MASK] France.")
    emb = Embedder.load(pkg, provider="cpu", verify=verify)
    return emb.encode(["hello world", "bonjour"]) if action == "encode" else emb


@pytest.fixture()
def bert_copy(tiny_models, tmp_path) -> Path:
    dst = tmp_path / "pkg"
    shutil.copytree(tiny_models["tiny-bert"].package, dst)
    return dst


# (mutation, action, verify, error, message fragment); the mutation gets the package copy.
CASES = [
    pytest.param(lambda p: (outside_copy(p, "model.onnx"), edit(p, graph_path(p, "../outside/model.onnx"))),
                 "load", True, PackageError, "contains '..'", id="dotdot-graph"),
    pytest.param(lambda p: set_key("tokenizer", "file", value=str(outside_copy(p, "tokenizer.json")))(p),
                 "load", True, PackageError, "is an absolute path", id="absolute-tokenizer"),
    pytest.param(lambda p: symlink_out(p, "tokenizer.json"), "load", True, PackageError,
                 "leads outside the package directory through a symlink", id="symlink-out-tokenizer"),
    pytest.param(lambda p: symlink_out(p, "model.onnx"), "load", False, PackageError,
                 "leads outside the package directory", id="symlink-out-graph-verify-off"),
    pytest.param(lambda p: symlink_out(p, "manifest.json"), "info", True, PackageError,
                 "leads outside the package directory", id="symlink-out-manifest"),
    pytest.param(lambda p: external_data(p, "../weights.bin", listed=False), "load", False, PackageError,
                 "reads external data from '../weights.bin'", id="external-data-outside"),
    pytest.param(lambda p: external_data(p, "weights.bin", listed=False), "load", True, PackageError,
                 "which is not one of the files", id="external-data-unlisted"),
    pytest.param(drop_key("tokenizer_sha256"), "load", True, PackageError, "records no sha256 for tokenizer.json",
                 id="missing-tokenizer-hash"),
    pytest.param(set_key("variants", "fp32", "files", 0, "sha256", value=""), "load", True, PackageError,
                 "records no sha256 for model.onnx", id="missing-graph-hash"),
    # another model's tokenizer: refused by its size, recorded at export, before it is read or hashed
    pytest.param("swap", "load", True, PackageError, "tokenizer.json is 33516 bytes, the manifest says",
                 id="swapped-tokenizer"),
    pytest.param(deep_manifest, "info", True, PackageError, "nests deeper than 64 levels", id="deep-nesting"),
    pytest.param(huge_manifest, "info", True, PackageError, "larger than 16 MB", id="huge-manifest"),
    pytest.param(set_key("variants", "fp32", "files", value=[]), "info", True, PackageError,
                 "manifest.variants.fp32.files is empty", id="empty-file-list"),
    pytest.param(set_key("variants", value=[]), "info", True, PackageError,
                 "manifest.variants must be an object, not a list", id="variants-list"),
    pytest.param(set_key("variants", value={}), "info", True, PackageError, "manifest.variants is empty",
                 id="variants-empty"),
    pytest.param(set_key("model", "hidden_size", value="64"), "info", True, PackageError,
                 "manifest.model.hidden_size must be an integer, not a string", id="wrong-type"),
    pytest.param(set_key("model", "has_mlm_head", value=1), "info", True, PackageError,
                 "has_mlm_head must be true or false, not a number", id="int-for-bool"),
    pytest.param(set_key("inputs", value="input_ids"), "info", True, PackageError, "manifest.inputs must be a list",
                 id="string-for-list"),
    pytest.param(drop_key("model"), "info", True, PackageError, "manifest has no 'model'", id="missing-section"),
    pytest.param(set_key("variants", "fp32", "validation", "drift", value=[]), "load", True, PackageError,
                 "manifest.variants.fp32.validation.drift must be an object, not a list", id="evidence-wrong-type"),
    pytest.param(set_key("format_version", value=True), "info", True, PackageError, "format_version True",
                 id="format-version-true"),
    pytest.param(newer_format,
                 "info", True, PackageError, "written by polyglot-onnx 9.1 (format 2); this polyglot-onnx",
                 id="format-version-2"),
    pytest.param(rename_output, "load", True, PackageError,
                 "missing from the graph: cls_vector; not in the manifest: cls_embedding", id="graph-io-mismatch"),
    pytest.param(tokenizer_is_a_directory, "load", True, PackageError, "tokenizer.json is not a regular file",
                 id="tokenizer-is-a-directory"),
    pytest.param(nan_weights, "encode", True, NonFiniteOutputError, "(variant fp32) returned NaN/Inf for input 0",
                 id="nan-weights-embed"),
    # issue 25: what onnxruntime reads is what the pre-scan reads; hostile sizes refused before reading
    pytest.param(overlong_graph_tag, "load", True, PackageError, "is not in canonical protobuf form",
                 id="overlong-graph-tag"),
    pytest.param(overlong_graph_tag, "load", False, PackageError, "is not in canonical protobuf form",
                 id="overlong-graph-tag-verify-off"),
    pytest.param(lambda p: ((p / "model.onnx").rename(p / "model.ORT"), edit(p, graph_path(p, "model.ORT"))), "load",
                 False, PackageError, "which onnxruntime reads as an ORT-format model", id="ort-format-graph"),
    pytest.param(duplicate_entries(10_000), "info", True, PackageError,
                 "files[1] ('model.onnx') is already listed as manifest.variants.fp32.files[0]", id="duplicate-entries"),
    pytest.param(set_key("canary", "path", value="tokenizer.json"), "info", True, PackageError,
                 "manifest.canary ('tokenizer.json') is already listed as manifest.tokenizer.file",
                 id="canary-is-the-tokenizer"),
    pytest.param(hardlinked_alias, "load", True, PackageError,
                 "variants.fp32.files[0] ('model.onnx') and variants.fp32.files[1] ('alias.onnx') are the same file",
                 id="hardlinked-alias"),
    pytest.param(huge_tokenizer, "load", False, PackageError,
                 "tokenizer.json (tokenizer.file) is larger than its limit of 128 MiB, so it is not read",
                 id="huge-tokenizer"),
    pytest.param(set_key("model", "hidden_size", value=65), "load", True, PackageError,
                 "manifest.json model.hidden_size is 65 but graph model.onnx gives token_embeddings 64 wide",
                 id="hidden-size-mismatch"),
    pytest.param(set_key("model", "embedding_dim", value=32), "encode", True, PackageError,
                 "model.embedding_dim is 32 but graph model.onnx gives sentence_embedding 64 wide",
                 id="embedding-dim-mismatch"),
    pytest.param(nan_weights, "fill", True, NonFiniteOutputError, "returned NaN/Inf for input 0",
                 id="nan-weights-fill"),
]


@pytest.mark.parametrize("mutate, action, verify, error, fragment", CASES)
def test_corrupt_package(bert_copy, tiny_models, mutate, action, verify, error, fragment):
    if mutate == "swap":
        mutate = swap_tokenizer(tiny_models["tiny-modernbert"].package)
    mutate(bert_copy)
    with pytest.raises(error) as info:
        run_case(bert_copy, action, verify)
    message = str(info.value)
    assert fragment in message and "\n" not in message
    # never the size (or existence) of a file outside the package; a package file's own size may be named
    assert " bytes" not in message or message.startswith("package file tokenizer.json is ")


def _varint(n: int, overlong: int = 0) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F or overlong else 0))
        n >>= 7
        if not n:
            break
    for i in range(overlong):  # extra 0x80 ... 0x00 bytes: still valid protobuf
        out.append(0x80 if i < overlong - 1 else 0)
    return bytes(out)


def _field(number: int, payload: bytes, overlong: int = 0) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload), overlong) + payload


def test_graph_scan_reads_protobuf_not_patterns(tmp_path):
    """Re-encoding cannot hide a location: value before key, overlong lengths, a tensor in a subgraph."""
    from polyglot_onnx.runtime.graph_refs import graph_refs, scan

    entry = _field(2, b"../evil.bin") + _field(1, b"location", overlong=2)
    subgraph = _field(5, _field(8, b"w") + _field(13, entry))
    node = _field(4, b"If") + _field(5, _field(1, b"then_branch") + _field(6, subgraph))
    model = _field(7, _field(1, node))
    assert scan(model).locations == ["../evil.bin"]
    assert scan(_field(7, _field(1, _field(4, b"EPContext")))).file_ops == {"EPContext"}
    (tmp_path / "cut.onnx").write_bytes(model[:-3])
    with pytest.raises(PackageError, match="is not a valid ONNX graph"):
        graph_refs(tmp_path / "cut.onnx", "cut.onnx")


def test_unknown_keys_are_ignored_with_a_debug_log(bert_copy, caplog):
    import logging

    unknown_keys(bert_copy)
    with caplog.at_level(logging.DEBUG, logger="polyglot_onnx"):
        vectors = run_case(bert_copy, "encode")
    assert vectors.shape == (2, 64)
    assert "ignoring unknown key manifest.added_in_a_later_release" in caplog.text
    assert "manifest.variants.fp32.files[0].compression" in caplog.text


def test_manifest_round_trip_and_verified_flag(bert_copy):
    from polyglot_onnx.manifest import Manifest

    manifest = read_manifest(bert_copy)
    assert Manifest.from_dict(json.loads(json.dumps(manifest.to_dict()))) == manifest
    assert Embedder.load(bert_copy, provider="cpu").describe()["verified"] is True
    assert Embedder.load(bert_copy, provider="cpu", verify=False).describe()["verified"] is False


def test_listed_external_data_loads(bert_copy):
    """The legitimate case: external data the variant lists, inside the package, hashed."""
    reference = run_case(bert_copy, "encode")
    external_data(bert_copy, "weights.bin", listed=True)
    np.testing.assert_allclose(run_case(bert_copy, "encode"), reference, atol=1e-6)


def test_unreadable_files_are_package_errors(bert_copy):
    """Root ignores file modes, so as root the load runs without the capabilities that let it."""
    for name in ("tokenizer.json", "model.onnx"):
        os.chmod(bert_copy / name, 0)
    code = (
        "import sys\nfrom polyglot_onnx import Embedder\nfrom polyglot_onnx.errors import PackageError\n"
        "for verify in (True, False):\n"
        "    try:\n        Embedder.load(sys.argv[1], provider='cpu', verify=verify)\n"
        "    except PackageError as err:\n        print(err)\n"
    )
    command = [sys.executable, "-c", code, str(bert_copy)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot drop the capability that ignores file modes")
        command = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *command]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120)
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and len(lines) == 2, out.stderr
    assert all("cannot be read (Permission denied)" in line for line in lines), lines


# ---- bounds ------------------------------------------------------------------------------------


def test_mask_flooding_is_bounded(bert_fm, tiny_models):
    from polyglot_onnx import FillMaskLimits

    with pytest.raises(InputError, match="has 40 \\[MASK\\] tokens, over the limit of 32 per text"):
        bert_fm("[MASK] " * 40)
    with pytest.raises(InputError, match="hold 300 \\[MASK\\] tokens, over the limit of 256 per call"):
        bert_fm(["[MASK] " * 30] * 10)
    with pytest.raises(InputError, match="top_k must be an integer from 1 to 100"):
        bert_fm("a [MASK]", top_k=10**9)
    strict = FillMask.load(tiny_models["tiny-bert"].package, provider="cpu", limits=FillMaskLimits(masks_per_text=2))
    assert len(strict("[MASK] and [MASK]")) == 2
    with pytest.raises(InputError, match="over the limit of 2 per text"):
        strict("[MASK] [MASK] [MASK]")
    assert strict.describe()["limits"]["masks_per_text"] == 2


def test_threads_batch_size_and_count_are_bounded(tiny_models, bert_emb, caplog):
    emb = Embedder.load(tiny_models["tiny-bert"].package, provider="cpu", threads=100_000)
    assert "is more than the" in caplog.text and emb.encode("x").shape == (64,)
    with pytest.raises(InputError, match="threads must be a positive integer"):
        Embedder.load(tiny_models["tiny-bert"].package, provider="cpu", threads=-1)
    with pytest.raises(InputError, match="batch_size must be an integer from 1 to 65536"):
        bert_emb.encode(["x"], batch_size=10**9)
    with pytest.raises(InputError, match="over the limit of 100000 per call"):
        bert_emb.encode(["x"] * 100_001)


def test_finite_check_names_the_input_and_tolerates_huge_finite_values(bert_emb):
    huge = np.full((3, 8), 3e38, np.float32)  # finite, though a float32 row sum overflows
    bert_emb.engine.ensure_finite(huge, [0, 1, 2])
    huge[1, 2], huge[2, 0] = np.inf, np.nan
    with pytest.raises(NonFiniteOutputError, match="returned NaN/Inf for input 4"):
        bert_emb.engine.ensure_finite(huge, [7, 4, 9])


def test_truncation_warning_text_is_constant(bert_emb):
    """Distinct warning texts would each stay in the warnings registry for the life of the process."""
    long = " ".join(sample_lines())
    with pytest.warns(TruncationWarning) as first:
        bert_emb.encode([long])
    with pytest.warns(TruncationWarning) as second:
        bert_emb.encode(["short", long + " " + long])
    assert len(first) == len(second) == 1 and str(first[0].message) == str(second[0].message)


def test_batches_stay_under_the_token_budget():
    from polyglot_onnx.runtime.text import MAX_BATCH_TOKENS, length_sorted_batches

    lengths = [8192] * 40 + [10] * 5
    batches = length_sorted_batches(lengths, 1000)
    assert all(len(b) * max(lengths[i] for i in b) <= MAX_BATCH_TOKENS for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(45))


# ---- hostile text: hypothesis --------------------------------------------------------------------

ANY_CHAR = st.characters(exclude_categories=())  # surrogates, controls, unassigned included
SPECIAL = st.sampled_from(
    ["", " ", "\x00", "\u200b", "\ufeff", "\r\n\t", "\ud800", "\udcff", "é" * 50, "[MASK]", "<mask>"]
)
TEXT = st.one_of(st.text(ANY_CHAR, max_size=40), SPECIAL, st.lists(SPECIAL, max_size=5).map("".join))
INPUTS = st.one_of(TEXT, st.lists(TEXT, max_size=4))
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None)


@FUZZ
@given(texts=INPUTS, output=st.sampled_from(["sentence", "token", "word"]))
def test_fuzz_embedder(bert_emb, texts, output):
    try:
        out = bert_emb.encode(texts, output=output, batch_size=3)
    except InputError:
        return
    n = 1 if isinstance(texts, str) else len(texts)
    if output == "sentence":  # one str -> one vector, as sentence-transformers gives
        assert out.shape == ((64,) if isinstance(texts, str) else (n, 64)) and np.isfinite(out).all()
    else:
        assert len(out) == n and all(np.isfinite(r.embeddings).all() for r in out)


@FUZZ
@given(parts=st.lists(st.one_of(TEXT, st.just(" [MASK] ")), min_size=1, max_size=6), many=st.booleans())
def test_fuzz_fill_mask(bert_fm, parts, many):
    texts = ["".join(parts), "".join(reversed(parts))] if many else "".join(parts)
    try:
        results = bert_fm(texts, top_k=2)
    except InputError:
        return
    for result in results if many else [results]:
        for preds in result if isinstance(result[0], list) else [result]:
            assert len(preds) == 2 and all(0.0 <= p["score"] <= 1.0 and isinstance(p["token_str"], str) for p in preds)
