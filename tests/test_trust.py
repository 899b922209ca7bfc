"""A package is a trust boundary: corrupt packages, hostile text, every open audited, CLI edges.

Issue 16's cases, one table row each: a package from a stranger can only ever produce a typed
one-line error or correct, finite output, and the loader never opens a file outside the package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polyglot_onnx import Embedder, FillMask
from polyglot_onnx.errors import InputError, NonFiniteOutputError, PackageError, PolyglotError
from polyglot_onnx.manifest import read_manifest, sha256_file

REPO = Path(__file__).resolve().parents[1]


# ---- helpers that corrupt a copy of tiny-bert --------------------------------------------------


def edit(pkg: Path, change: Callable[[dict], None]) -> None:
    data = json.loads((pkg / "manifest.json").read_text())
    change(data)
    (pkg / "manifest.json").write_text(json.dumps(data))


def rehash(pkg: Path, variant: str = "fp32") -> None:
    """What a faulty build would write: the manifest agrees with the (bad) files."""

    def change(data: dict) -> None:
        for entry in data["variants"][variant]["files"]:
            entry["sha256"] = sha256_file(pkg / entry["path"])
            entry["size"] = (pkg / entry["path"]).stat().st_size

    edit(pkg, change)


def outside_copy(pkg: Path, name: str) -> Path:
    """An identical copy of a package file outside the package: a matching sha256 must not help."""
    target = pkg.parent / "outside" / name
    target.parent.mkdir(exist_ok=True)
    shutil.copy(pkg / name, target)
    return target


def graph_path(pkg: Path, value: str) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        data["variants"]["fp32"]["files"][0]["path"] = value

    return change


def symlink_out(pkg: Path, name: str) -> None:
    target = outside_copy(pkg, name)
    (pkg / name).unlink()
    (pkg / name).symlink_to(target)


def external_data(pkg: Path, location: str, listed: bool) -> None:
    """Re-save the graph with its weights in a side file, then point the graph at ``location``."""
    import onnx

    model = onnx.load(str(pkg / "model.onnx"))
    onnx.save_model(model, str(pkg / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=1024)
    model = onnx.load(str(pkg / "model.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(model, str(pkg / "model.onnx"))
    if location.startswith("../"):
        shutil.move(pkg / "weights.bin", pkg.parent / location[3:])
    files = [{"path": name, "sha256": "", "size": 0} for name in ["model.onnx"] + (["weights.bin"] if listed else [])]
    edit(pkg, lambda d: d["variants"]["fp32"].__setitem__("files", files))
    rehash(pkg)


def nan_weights(pkg: Path) -> None:
    """Overwrite the largest float initializer (the embedding table) with NaN, as a faulty build might."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(pkg / "model.onnx"))
    floats = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    largest = max(floats, key=lambda t: int(np.prod(t.dims)))
    largest.CopyFrom(numpy_helper.from_array(np.full(tuple(largest.dims), np.nan, np.float32), largest.name))
    onnx.save_model(model, str(pkg / "model.onnx"))
    rehash(pkg)


def deep_manifest(pkg: Path) -> None:
    (pkg / "manifest.json").write_text('{"format_version": 1, "model": ' + "[" * 10_000 + "]" * 10_000 + "}")


def huge_manifest(pkg: Path) -> None:
    edit(pkg, lambda d: d.__setitem__("padding", "x" * (17 * 1024 * 1024)))


def unknown_keys(pkg: Path) -> None:
    def change(data: dict) -> None:
        data["added_in_a_later_release"] = {"anything": [1, 2]}
        data["model"]["new_model_fact"] = 3
        data["variants"]["fp32"]["files"][0]["compression"] = "none"

    edit(pkg, change)


def swap_tokenizer(other: Path) -> Callable[[Path], None]:
    return lambda pkg: shutil.copy(other / "tokenizer.json", pkg / "tokenizer.json")


def rename_output(pkg: Path) -> None:
    edit(pkg, lambda d: d.__setitem__("outputs", [o.replace("cls_embedding", "cls_vector") for o in d["outputs"]]))


def tokenizer_is_a_directory(pkg: Path) -> None:
    (pkg / "tokenizer.json").unlink()
    (pkg / "tokenizer.json").mkdir()


def set_key(*path: str | int, value: object) -> Callable[[Path], None]:
    def change(data: dict) -> None:
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return lambda pkg: edit(pkg, change)


def drop_key(key: str) -> Callable[[Path], None]:
    return lambda pkg: edit(pkg, lambda d: d.pop(key))


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
    pytest.param("swap", "load", True, PackageError, "tokenizer.json does not match its sha256", id="swapped-tokenizer"),
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
    pytest.param(set_key("format_version", value=True), "info", True, PackageError, "format_version True",
                 id="format-version-true"),
    pytest.param(lambda p: (set_key("format_version", value=2)(p), set_key("versions", "polyglot-onnx", value="9.1")(p)),
                 "info", True, PackageError, "written by polyglot-onnx 9.1 (format 2); this polyglot-onnx",
                 id="format-version-2"),
    pytest.param(rename_output, "load", True, PackageError,
                 "missing from the graph: cls_vector; not in the manifest: cls_embedding", id="graph-io-mismatch"),
    pytest.param(tokenizer_is_a_directory, "load", True, PackageError, "tokenizer.json is not a regular file",
                 id="tokenizer-is-a-directory"),
    pytest.param(nan_weights, "encode", True, NonFiniteOutputError, "(variant fp32) returned NaN/Inf for input 0",
                 id="nan-weights-embed"),
    pytest.param(nan_weights, "fill", True, NonFiniteOutputError, "returned NaN/Inf for input 0", id="nan-weights-fill"),
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
    assert " bytes" not in message  # never the size (or existence) of a file outside the package


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


@pytest.fixture(scope="module")
def bert_fm(tiny_models):
    return FillMask.load(tiny_models["tiny-bert"].package, provider="cpu")


@pytest.fixture(scope="module")
def bert_emb(tiny_models):
    return Embedder.load(tiny_models["tiny-bert"].package, provider="cpu")


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
    assert "is more than the" in caplog.text and emb.encode("x").shape == (1, 64)
    with pytest.raises(InputError, match="threads must be a non-negative integer"):
        Embedder.load(tiny_models["tiny-bert"].package, provider="cpu", threads=-1)
    with pytest.raises(InputError, match="batch_size must be an integer from 1 to 65536"):
        bert_emb.encode(["x"], batch_size=10**9)
    with pytest.raises(InputError, match="over the limit of 100000 per call"):
        bert_emb.encode(["x"] * 100_001)


def test_batches_stay_under_the_token_budget():
    from polyglot_onnx.runtime.text import MAX_BATCH_TOKENS, length_sorted_batches

    lengths = [8192] * 40 + [10] * 5
    batches = length_sorted_batches(lengths, 1000)
    assert all(len(b) * max(lengths[i] for i in b) <= MAX_BATCH_TOKENS for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(45))


# ---- hostile text: hypothesis --------------------------------------------------------------------

ANY_CHAR = st.characters(exclude_categories=())  # surrogates, controls, unassigned included
SPECIAL = st.sampled_from(["", " ", "\x00", "\u200b", "\ufeff", "\r\n\t", "\ud800", "\udcff", "é" * 50, "[MASK]", "<mask>"])
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
    if output == "sentence":
        assert out.shape == (n, 64) and np.isfinite(out).all()
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


# ---- no open outside the package -------------------------------------------------------------------

AUDIT = r"""
import json, os, sys
from polyglot_onnx import Embedder, FillMask
from polyglot_onnx.errors import PolyglotError

opened, recording = [], [False]

def hook(event, args):
    if recording[0] and event == "open" and isinstance(args[0], (str, bytes)):
        opened.append(os.path.realpath(os.fsdecode(args[0])))

sys.addaudithook(hook)
Embedder.load(sys.argv[1], provider="cpu")  # warm: lazy imports are Python's opens, not the loader's
for path, kind in json.loads(sys.argv[2]):
    opened.clear()
    recording[0] = True
    try:
        (FillMask if kind == "fill" else Embedder).load(path, provider="cpu")
        outcome = "loaded"
    except PolyglotError as err:
        outcome = type(err).__name__
    recording[0] = False
    print(json.dumps({"package": path, "outcome": outcome, "opened": opened}))
"""


def test_loader_opens_nothing_outside_the_package(tiny_models, tmp_path):
    """Python-level opens only (onnxruntime's C++ opens are covered by the external-data rows above)."""
    good = [str(tiny_models[n].package) for n in ("tiny-bert", "tiny-modernbert", "tiny-encoder")]
    hostile = []
    for name, mutate in {"symlink": lambda p: symlink_out(p, "tokenizer.json"),
                         "dotdot": lambda p: (outside_copy(p, "model.onnx"), edit(p, graph_path(p, "../outside/model.onnx"))),
                         "absolute": set_key("tokenizer", "file", value="/etc/hostname")}.items():
        pkg = tmp_path / name / "pkg"
        shutil.copytree(tiny_models["tiny-bert"].package, pkg)
        mutate(pkg)
        hostile.append(str(pkg))
    cases = [[good[0], "fill"], [good[1], "fill"], [good[2], "embed"]] + [[h, "embed"] for h in hostile]
    out = subprocess.run([sys.executable, "-c", AUDIT, good[0], json.dumps(cases)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    allowed = [os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, "/proc", "/sys", "/dev")]
    allowed += [os.path.realpath(p) for p in sys.path if p and os.path.isdir(p)]
    for line in out.stdout.splitlines():
        record = json.loads(line)
        root = os.path.realpath(record["package"])
        expected = "loaded" if record["package"] in good else "PackageError"
        assert record["outcome"] == expected, record
        strays = [p for p in record["opened"] if not p.startswith(root + os.sep) and not any(
            p == a or p.startswith(a + os.sep) for a in allowed)]
        assert not strays, (record["package"], strays)
        if expected == "loaded":
            assert any(p.endswith("tokenizer.json") for p in record["opened"])  # the hook does see the loader


# ---- CLI edges ------------------------------------------------------------------------------------


def cli(*args: str | bytes, stdin: bytes | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "polyglot_onnx", *args], input=stdin, capture_output=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def one_line_error(res: subprocess.CompletedProcess, fragment: str) -> None:
    err = res.stderr.decode()
    assert res.returncode == 1, err
    assert "Traceback" not in err and fragment in err
    assert len([l for l in err.splitlines() if l.startswith("polyglot-onnx: error:")]) == 1


@pytest.mark.parametrize("locale", ["C.UTF-8", "C"])
def test_cli_non_utf8_argv_and_stdin(tiny_models, locale):
    pkg = str(tiny_models["tiny-bert"].package)
    env = {"LC_ALL": locale, "PYTHONUTF8": "0"}
    one_line_error(cli("embed", pkg, b"caf\xe9", env=env), "not valid UTF-8 (byte 0xe9)")
    one_line_error(cli("embed", pkg, "--file", "-", stdin="café\n".encode("latin-1"), env=env), "stdin is not UTF-8")
    one_line_error(cli("fill-mask", pkg, "--file", "-", stdin=bytes(range(256)) * 4, env=env), "stdin is not UTF-8")


def test_cli_broken_pipe_and_closed_stdout(tiny_models):
    pkg = str(tiny_models["tiny-bert"].package)
    proc = subprocess.Popen([sys.executable, "-m", "polyglot_onnx", "embed", pkg, "--json", "--file", "-"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first write
    _, err = proc.communicate(b"hello world\n" * 50, timeout=120)
    assert proc.returncode == 141 and b"Traceback" not in err and b"Exception ignored" not in err, err
    closed = subprocess.run(["bash", "-c", f'"$0" -m polyglot_onnx embed "$1" hello >&-', sys.executable, pkg],
                            capture_output=True, text=True, timeout=120)
    assert closed.returncode == 1 and "stdout is closed" in closed.stderr and "Traceback" not in closed.stderr


def test_cli_nan_package_is_an_error_not_json(bert_copy):
    nan_weights(bert_copy)
    one_line_error(cli("embed", str(bert_copy), "--json", "hello"), "returned NaN/Inf for input 0")
