"""embed-corpus against hostile input and damaged output (issue 25, part 5).

A poison row of any kind is one error row with its file and line, never a traceback; a committed shard
that was damaged, truncated or copied in from another run is found by its ledger entry on the next start,
deleted with a warning and redone, so the output stays exactly once and equal to an undisturbed run's.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import sample_lines
from hostile_rows import HUGE, POISON
from polyglot_onnx import Embedder
from polyglot_onnx.errors import JobError
from polyglot_onnx.jobs import JobOptions, embed_corpus
from polyglot_onnx.jobs.inputs import clean_row, parse_json_line

pytestmark = pytest.mark.filterwarnings("ignore::polyglot_onnx.errors.TruncationWarning")


def docs(n: int) -> list[str]:
    lines = sample_lines()
    return [" ".join(lines[(i * 5 + k) % len(lines)] for k in range(1 + i % 4)) for i in range(n)]


def write_poisoned(path: Path, texts: list[str]) -> tuple[list[str], dict[int, str]]:
    """A poison row first (check_columns reads it), then one after every 4 good rows; returns the good ids
    and, by 1-based line, the reason each poison row must get."""
    ids, expected, lines = [], {}, [POISON[14][1]]
    expected[1] = POISON[14][2]
    poison = iter(POISON)
    for i, text in enumerate(texts):
        lines.append(json.dumps({"doc": f"d{i}", "text": text}, ensure_ascii=False).encode())
        ids.append(f"d{i}")
        if (i + 1) % 4 == 0 and (item := next(poison, None)):
            lines.append(item[1])
            expected[len(lines)] = item[2]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return ids, expected


def opts(**kw: object) -> JobOptions:
    return JobOptions(**{"id_column": "doc", "shard_size": 16, "show_progress": False, **kw})  # type: ignore[arg-type]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "polyglot_onnx", *args], capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})}, timeout=120)


def errors_of(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (out / "_errors.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def package(tiny_models):
    return tiny_models["tiny-encoder"].package


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], list[str], dict[int, str]]:
    path = tmp_path_factory.mktemp("hostile") / "poisoned.jsonl"
    texts = docs(4 * len(POISON) + 60)  # 161 rows: 11 shards of 16
    ids, expected = write_poisoned(path, texts)
    return path, texts, ids, expected


@pytest.fixture(scope="module")
def reference(package, poisoned, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An undisturbed run: what every damaged-and-resumed output must equal."""
    out = tmp_path_factory.mktemp("ref") / "out"
    embed_corpus(package, poisoned[0], out, opts())
    return out


def test_every_poison_row_is_one_error_row_with_its_line(package, poisoned, reference):
    path, texts, ids, expected = poisoned
    errors = errors_of(reference)
    assert {e["line"]: e["reason"] for e in errors}.keys() == expected.keys()
    for error in errors:
        assert expected[error["line"]] in error["reason"], error
        assert error["file"] == str(path.resolve()) and error["row"] == error["line"] - 1
        assert "\n" not in error["reason"] and len(error["reason"]) < 240
    table = pq.read_table(reference)
    assert table.column("id").to_pylist() == ids  # every good row once, in order
    np.testing.assert_allclose(np.stack(table.column("embedding").to_pylist()), Embedder.load(package).encode(texts),
                               atol=2e-6)
    run = json.loads((reference / "_run.json").read_text())
    assert run["counts"]["errors"] == len(expected) and run["counts"]["embedded"] == len(ids)


def test_poison_rows_through_the_cli_exit_0_without_traceback(package, poisoned, tmp_path):
    path, _, _, expected = poisoned
    res = cli("embed-corpus", str(package), "--input", str(path), "--out", str(tmp_path / "o"), "--id-column", "doc",
              "--shard-size", "16", "--quiet")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert json.loads(res.stdout)["counts"]["errors"] == len(expected)
    res = cli("embed-corpus", str(package), "--input", str(path), "--out", str(tmp_path / "f"), "--id-column", "doc",
              "--fail-on-error", "--quiet")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [(
        "polyglot-onnx: error: row 0 of the input is bad (invalid JSON (nested deeper than Python's recursion limit)) "
        "at poisoned.jsonl line 1 and --fail-on-error is set: fix the input, or drop --fail-on-error to log bad rows "
        "to _errors.jsonl")]


def test_row_level_guards_name_the_problem():
    assert parse_json_line(b"[" * 10_000, "text", None)[0].reason.startswith("invalid JSON (nested deeper")
    assert parse_json_line(b'{"text": ' + HUGE + b"}", "text", None)[0].reason == (
        "invalid JSON (Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits)")
    assert parse_json_line(b'{"text": 1e999}', "text", None)[0] == float("inf")
    deep_id = json.loads("[" * 900 + "]" * 900)  # parses, but json.dumps may recurse past the limit
    text, ident, reason = clean_row("fine", deep_id, user_ids=True)
    assert (text, reason) == ("fine", None) or (ident, reason[:13]) == (None, "unusable id (")
    assert clean_row("fine", {"when": b"bytes"}, user_ids=True)[2] == (
        "unusable id (Object of type bytes is not JSON serializable)")
    assert clean_row("fine", 10 ** 5000, user_ids=True)[2].startswith("unusable id (Exceeds the limit")
    assert clean_row(float("inf"), "x", user_ids=True)[2] == "not text (float)"


def test_huge_numbers_in_csv_and_parquet_text_columns_are_just_text(package, tmp_path):
    huge = "9" * 5_000
    table = pa.table({"text": ["short one", huge, "1e999"], "key": ["a", huge, "c"]})
    import pyarrow.csv as pcsv

    pcsv.write_csv(table, tmp_path / "n.csv")
    pq.write_table(table, tmp_path / "n.parquet")
    for name in ("n.csv", "n.parquet"):
        run = embed_corpus(package, tmp_path / name, tmp_path / f"out-{name}", opts(id_column="key"))
        assert run["counts"]["embedded"] == 3 and run["counts"]["errors"] == 0
        assert pq.read_table(tmp_path / f"out-{name}").column("id").to_pylist() == ["a", huge, "c"]


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _zero_page(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[: 4096] = bytes(min(4096, len(data)))
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _damage(out: Path, reference: Path) -> list[str]:
    """Every kind of damage, each to its own shard; returns the damaged shard names."""
    data, ref = out / "data", reference / "data"
    shards = sorted(p.name for p in data.glob("part-*.parquet"))
    assert len(shards) >= 9, shards
    _flip(data / shards[1])
    _zero_page(data / shards[2])
    shutil.copy(ref / shards[3], data / shards[3])  # another run's shard (same job, other run id)
    shutil.copy(ref / shards[4], data / shards[4])  # ... with that run's ledger entry
    shutil.copy(reference / "_ledger" / "part-00004.json", out / "_ledger" / "part-00004.json")
    _flip(out / "_ledger" / "part-00005.json")  # a damaged ledger entry: its shard cannot be trusted
    (data / shards[6]).unlink()  # a committed shard deleted
    _truncate(data / shards[-1])  # the last shard cut short
    return [shards[i] for i in (1, 2, 3, 4, 5, 6, -1)]


def _assert_equal_to_reference(out: Path, reference: Path) -> None:
    got, ref = pq.read_table(out), pq.read_table(reference)
    assert got.column("id").to_pylist() == ref.column("id").to_pylist()  # no duplicate, none missing
    assert got.drop(["id"]).equals(ref.drop(["id"]))  # the vectors bit for bit
    assert (out / "_errors.jsonl").read_bytes() == (reference / "_errors.jsonl").read_bytes()
    assert not list(out.glob("**/.*.tmp-*"))


def test_damaged_shards_of_a_finished_run_are_redone_exactly(package, poisoned, reference, tmp_path, caplog):
    out = tmp_path / "out"
    embed_corpus(package, poisoned[0], out, opts())
    damaged = _damage(out, reference)
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("data/part-*.parquet") if p.name not in damaged}
    with caplog.at_level(logging.WARNING, logger="polyglot_onnx"):
        run = embed_corpus(package, poisoned[0], out, opts())
    warned = sorted(r.getMessage().split()[1] for r in caplog.records if "rows are redone" in r.getMessage())
    assert warned == sorted(damaged)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("data/part-*.parquet") if p.name not in damaged} == kept
    assert run["sessions"][-1]["shards_committed"] == len(damaged) and run["status"] == "complete"
    _assert_equal_to_reference(out, reference)
    caplog.clear()
    again = embed_corpus(package, poisoned[0], out, opts())  # verified intact: nothing redone, nothing warned
    assert again["sessions"] == run["sessions"] and not caplog.records


def test_damage_to_a_killed_run_then_resume_via_cli(package, poisoned, reference, tmp_path):
    path = poisoned[0]
    args = ["embed-corpus", str(package), "--input", str(path), "--id-column", "doc", "--shard-size", "16",
            "--quiet", "--out", str(tmp_path / "out")]
    res = cli(*args, env={"POLYGLOT_ONNX_JOB_KILL": "after_shard:4"})  # shard 3 written, its entry not yet
    assert res.returncode == -9, res.stderr
    out = tmp_path / "out"
    assert (out / "data" / "part-00003.parquet").exists() and not (out / "_ledger" / "part-00003.json").exists()
    _flip(out / "data" / "part-00001.parquet")
    _truncate(out / "data" / "part-00002.parquet")
    res = cli(*args, "--resume")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-2000:]
    warned = sorted(line.split()[1] for line in res.stderr.splitlines() if "rows are redone" in line)
    assert warned == ["part-00001.parquet", "part-00002.parquet", "part-00003.parquet"]
    _assert_equal_to_reference(out, reference)


def test_damaged_errors_part_and_legacy_runs(package, poisoned, reference, tmp_path, caplog):
    out = tmp_path / "out"
    embed_corpus(package, poisoned[0], out, opts())
    (out / "_errors" / "part-00002.jsonl").write_text("")  # the shard is fine, its bad rows are gone
    with caplog.at_level(logging.WARNING, logger="polyglot_onnx"):
        embed_corpus(package, poisoned[0], out, opts())
    assert [r.getMessage().split()[1] for r in caplog.records] == ["part-00002.parquet"]
    _assert_equal_to_reference(out, reference)
    # A run started by a version without ledger entries: finished, it is left alone; unfinished, its
    # unverifiable shards are redone.
    run = json.loads((out / "_run.json").read_text())
    del run["run_id"]
    shutil.rmtree(out / "_ledger")
    (out / "_run.json").write_text(json.dumps({**run, "status": "complete"}))
    assert "run_id" not in embed_corpus(package, poisoned[0], out, opts())
    (out / "_run.json").write_text(json.dumps({**run, "status": "running"}))
    done = embed_corpus(package, poisoned[0], out, opts())
    assert done["status"] == "complete" and done["sessions"][-1]["shards_committed"] == done["counts"]["shards"]
    _assert_equal_to_reference(out, reference)


def test_a_stray_file_under_a_shard_like_name_is_refused(package, poisoned, reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    (out / "data" / "part-3.parquet").write_bytes(b"")
    with pytest.raises(JobError, match="part-3.parquet, which embed-corpus never writes"):
        embed_corpus(package, poisoned[0], out, opts())
