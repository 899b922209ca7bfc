"""A package is a trust boundary, at its edges: every open audited, the CLI's encodings and pipes (issue 16)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from corrupt_packages import edit, graph_path, nan_weights, outside_copy, set_key, symlink_out


@pytest.fixture()
def bert_copy(tiny_models, tmp_path):
    dst = tmp_path / "pkg"
    shutil.copytree(tiny_models["tiny-bert"].package, dst)
    return dst


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
    """Python-level opens (onnxruntime's own C++ opens are covered by test_trust.py's external-data rows)."""
    good = [str(tiny_models[n].package) for n in ("tiny-bert", "tiny-modernbert", "tiny-encoder")]
    hostile = []
    mutations = {
        "symlink": lambda p: symlink_out(p, "tokenizer.json"),
        "dotdot": lambda p: [outside_copy(p, "model.onnx"), edit(p, graph_path(p, "../outside/model.onnx"))],
        "absolute": set_key("tokenizer", "file", value="/etc/hostname"),
    }
    for name, mutate in mutations.items():
        pkg = tmp_path / name / "pkg"
        shutil.copytree(tiny_models["tiny-bert"].package, pkg)
        mutate(pkg)
        hostile.append(str(pkg))
    cases = [[good[0], "fill"], [good[1], "fill"], [good[2], "embed"]] + [[h, "embed"] for h in hostile]
    out = subprocess.run([sys.executable, "-c", AUDIT, good[0], json.dumps(cases)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and len(out.stdout.splitlines()) == len(cases), out.stderr
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


def cli(*args: str | bytes, stdin: bytes | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
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
    closed = subprocess.run(["bash", "-c", '"$0" -m polyglot_onnx embed "$1" hello >&-', sys.executable, pkg],
                            capture_output=True, text=True, timeout=120)
    assert closed.returncode == 1 and "stdout is closed" in closed.stderr and "Traceback" not in closed.stderr


def test_cli_nan_package_is_an_error_not_json(bert_copy):
    nan_weights(bert_copy)
    one_line_error(cli("embed", str(bert_copy), "--json", "hello"), "returned NaN/Inf for input 0")


def test_cli_info_survives_odd_evidence(bert_copy):
    """Evidence is free-form JSON: 'info' says it is malformed instead of a KeyError traceback."""
    set_key("variants", "fp32", "validation", "drift", value={"passed": True})(bert_copy)
    res = cli("info", str(bert_copy))
    assert res.returncode == 0 and b"Traceback" not in res.stderr
    assert b"evidence in manifest.json is malformed" in res.stdout
