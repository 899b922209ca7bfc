"""embed-corpus output that tools read as it is (issue 24): the data/ folder read by pandas, polars, DuckDB and
datasets without options, --keep-columns, --vector-column, and the variant recorded in every shard."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import sample_lines
from polyglot_onnx import Embedder
from polyglot_onnx.cli import main
from polyglot_onnx.errors import InputError, JobError
from polyglot_onnx.jobs import JobOptions, embed_corpus

pytestmark = pytest.mark.filterwarnings("ignore::polyglot_onnx.errors.TruncationWarning")

WIDTH = 64  # the tiny encoder's hidden size


@pytest.fixture(scope="module")
def package(tiny_models) -> Path:
    return tiny_models["tiny-encoder"].package


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [" ".join(sample_lines()[i: i + 1 + i % 3]) for i in range(23)]


def opts(**kw) -> JobOptions:
    return JobOptions(**{"shard_size": 7, "show_progress": False, **kw})


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def vectors(table: pa.Table, column: str = "embedding") -> np.ndarray:
    return np.stack(table.column(column).to_numpy(zero_copy_only=False))


def test_data_folder_is_read_as_it_is_by_every_reader(package, texts, tmp_path, monkeypatch):
    """pandas, polars (folder and glob, eager and lazy), DuckDB and datasets read OUT/data with no option: it holds
    the shards and nothing else (polars reads every non-empty file under a folder, _run.json included)."""
    import duckdb
    import pandas as pd
    import polars as pl

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    out = tmp_path / "out"
    run = embed_corpus(package, str(write_jsonl(tmp_path / "t.jsonl", [{"text": t} for t in texts])), out, opts())
    assert run["counts"]["shards"] == 4 and run["format"] == "polyglot-onnx-corpus/2"
    data = out / "data"
    assert sorted(p.name for p in data.iterdir()) == [f"part-{k:05d}.parquet" for k in range(4)]
    ref = pq.read_table(data)
    ids, expected = list(range(len(texts))), vectors(ref)
    assert ref.column("id").to_pylist() == ids
    np.testing.assert_allclose(expected, Embedder.load(package).encode(texts), atol=2e-6)
    glob = str(data / "*.parquet")

    for df in (pd.read_parquet(data), pd.read_parquet(out)):  # pyarrow skips _run.json, _errors/, _ledger/
        assert df["id"].tolist() == ids and list(df.columns) == ["id", "embedding", "n_tokens", "truncated"]
        np.testing.assert_array_equal(np.stack(df["embedding"]), expected)

    for frame in (pl.read_parquet(data), pl.read_parquet(glob), pl.scan_parquet(data).collect()):
        assert frame["id"].to_list() == ids and frame["embedding"].dtype == pl.Array(pl.Float32, WIDTH)
        np.testing.assert_array_equal(frame["embedding"].to_numpy(), expected)

    for source in (glob, str(data)):
        rows = duckdb.sql(f"SELECT id, embedding, typeof(embedding) FROM read_parquet('{source}') ORDER BY id"
                          ).fetchall()
        # Parquet has no fixed-size list type, and DuckDB does not read the width from the footer's Arrow schema
        assert [r[0] for r in rows] == ids and {r[2] for r in rows} <= {"FLOAT[]", f"FLOAT[{WIDTH}]"}
        np.testing.assert_array_equal(np.array([r[1] for r in rows], np.float32), expected)
    query = expected[3].tolist()
    # list_cosine_similarity takes the FLOAT[] as it is; array_cosine_similarity wants the width: a cast in SQL,
    # or DuckDB over pyarrow's dataset (which reads the fixed-size list from the footer's Arrow schema)
    (best,) = duckdb.sql(f"SELECT id FROM read_parquet('{glob}') ORDER BY list_cosine_similarity(embedding, "
                         f"{query}::FLOAT[]) DESC LIMIT 1").fetchall()
    (cast,) = duckdb.sql(f"SELECT id FROM read_parquet('{glob}') ORDER BY array_cosine_similarity("
                         f"embedding::FLOAT[{WIDTH}], {query}::FLOAT[{WIDTH}]) DESC LIMIT 1").fetchall()
    import pyarrow.dataset as pads

    shards = pads.dataset(data)  # noqa: F841 - DuckDB finds it by name
    ((kind, arrow),) = duckdb.sql(f"SELECT typeof(embedding), id FROM shards ORDER BY array_cosine_similarity("
                                  f"embedding, {query}::FLOAT[{WIDTH}]) DESC LIMIT 1").fetchall()
    assert best[0] == cast[0] == arrow == 3 and kind == f"FLOAT[{WIDTH}]"

    hf = str(tmp_path / "hf")
    for ds in (datasets.load_dataset("parquet", data_dir=str(data), split="train", cache_dir=hf),
               datasets.load_dataset("parquet", data_files=glob, split="train", cache_dir=hf),
               datasets.load_dataset(str(data), split="train", cache_dir=hf)):
        assert ds["id"][:] == ids
        np.testing.assert_array_equal(ds.with_format("numpy")["embedding"][:], expected)


@pytest.mark.parametrize(("dtype", "arrow", "polars", "duck", "width"), [
    ("float16", pa.float16(), "Float16", "FLOAT[]", WIDTH),
    ("int8", pa.int8(), "Int8", "TINYINT[]", WIDTH),
    ("binary", pa.uint8(), "UInt8", "UTINYINT[]", WIDTH // 8),
])
def test_stored_dtypes_are_fixed_size_lists_for_every_reader(package, texts, tmp_path, dtype, arrow, polars, duck,
                                                             width):
    import duckdb
    import polars as pl

    out = tmp_path / "out"
    embed_corpus(package, str(write_jsonl(tmp_path / "t.jsonl", [{"text": t} for t in texts])), out,
                 opts(dtype=dtype))
    data = out / "data"
    field = pq.read_schema(data / "part-00000.parquet").field("embedding")
    assert field.type == pa.list_(pa.field("element", arrow, False), width)
    assert pl.read_parquet(data)["embedding"].dtype == pl.Array(getattr(pl, polars), width)
    ((kind, n),) = duckdb.sql(f"SELECT any_value(typeof(embedding)), max(len(embedding)) FROM '{data}/*.parquet'"
                              ).fetchall()
    assert kind in (duck, duck.replace("[]", f"[{width}]")) and n == width


def test_keep_columns_round_trip_parquet_types(package, texts, tmp_path):
    """Parquet columns are kept with their own type in every shard, whichever file a shard's rows came from."""
    import polars as pl

    n = len(texts)
    full = pa.table({
        "text": texts,
        "url": [f"https://example.org/{i}" for i in range(n)],
        "year": pa.array([1990 + i for i in range(n)], pa.int32()),
        "score": [i / 7 if i % 5 else None for i in range(n)],
        "ok": [i % 2 == 0 for i in range(n)],
        "when": pa.array([1_700_000_000_000_000 + i for i in range(n)], pa.timestamp("us", tz="UTC")),
        "tags": [["a", str(i)] if i % 4 else [] for i in range(n)],
        "info": [{"lang": "xx", "n": i} for i in range(n)],
        "label": pa.array(["cat", "dog"] * (n // 2) + ["cat"] * (n % 2)).dictionary_encode(),
    })
    keep = [c for c in full.column_names if c != "text"]
    pq.write_table(full.slice(0, 10), tmp_path / "a.parquet", row_group_size=4)
    second = full.slice(10)  # in the second file, score is all null: Parquet calls it type null there
    second = second.set_column(second.schema.get_field_index("score"), "score", pa.nulls(len(second)))
    pq.write_table(second, tmp_path / "b.parquet")
    run = embed_corpus(package, str(tmp_path / "*.parquet"), tmp_path / "out",
                       opts(keep_columns=("text", *keep), vector_column="vector"))
    table = pq.read_table(tmp_path / "out" / "data")
    assert table.column_names == ["id", "text", *keep, "vector", "n_tokens", "truncated"]
    for name in ("text", *keep):
        assert table.schema.field(name).type == full.schema.field(name).type, name
        want = full.column(name).to_pylist()
        if name == "score":
            want = want[:10] + [None] * (n - 10)
        assert table.column(name).to_pylist() == want, name
    assert run["columns"]["year"] == "int32" and run["columns"]["vector"].startswith("fixed_size_list")
    np.testing.assert_allclose(vectors(table, "vector"), Embedder.load(package).encode(texts), atol=2e-6)
    frame = pl.read_parquet(tmp_path / "out" / "data")
    assert frame["year"].dtype == pl.Int32 and frame["tags"].to_list()[1] == ["a", "1"]


def test_keep_columns_from_jsonl_and_csv_are_strings(package, tmp_path):
    """JSONL and CSV have no schema: kept values are strings (JSON text for non-strings), one type in every shard."""
    import pyarrow.csv as pcsv

    records = [
        {"text": "Le chat dort.", "year": 2001, "meta": {"a": [1, 2]}, "lang": "fr"},
        {"text": "東京は日本の首都", "year": 2002.5, "meta": None, "lang": "ja"},
        {"text": "The fox.", "year": "n/a", "lang": None},
        {"text": "Ok", "year": True, "meta": [1, "x"], "lang": "en"},
    ] * 3
    write_jsonl(tmp_path / "r.jsonl", records)
    with open(tmp_path / "r.jsonl", "ab") as f:  # a kept value Arrow cannot store: that row is an error row
        f.write(b'{"text": "fine", "year": 1, "lang": "\\ud800"}\n')
    run = embed_corpus(package, tmp_path / "r.jsonl", tmp_path / "out",
                       opts(keep_columns="year,meta,lang", shard_size=5))
    table = pq.read_table(tmp_path / "out" / "data")
    assert all(table.schema.field(c).type == pa.string() for c in ("year", "meta", "lang"))
    assert table.column("year").to_pylist()[:4] == ["2001", "2002.5", "n/a", "true"]
    assert table.column("meta").to_pylist()[:4] == ['{"a": [1, 2]}', None, None, '[1, "x"]']
    assert table.column("lang").to_pylist()[:4] == ["fr", "ja", None, "en"]
    assert run["counts"]["errors"] == 1
    error = json.loads((tmp_path / "out" / "_errors.jsonl").read_text())
    assert error["line"] == 13
    assert error["reason"] == "unusable value in kept column 'lang' (lone surrogate, not UTF-8 text)"

    pcsv.write_csv(pa.table({"text": ["a b", "c d", "e f"], "zip": ["007", "10", ""], "n": ["1", "2.5", "x"]}),
                   tmp_path / "r.csv")
    embed_corpus(package, tmp_path / "r.csv", tmp_path / "csv", opts(keep_columns=("zip", "n")))
    table = pq.read_table(tmp_path / "csv" / "data")
    assert table.column("zip").to_pylist() == ["007", "10", ""] and table.column("n").to_pylist() == ["1", "2.5", "x"]


def test_bad_keep_and_vector_columns_fail_before_any_work(package, tmp_path, capsys):
    pq.write_table(pa.table({"text": ["a"], "n": pa.array([1], pa.int64())}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"text": ["b"], "n": pa.array([1.5])}), tmp_path / "b.parquet")
    write_jsonl(tmp_path / "j.jsonl", [{"text": "a", "lang": "en"}])
    (tmp_path / "t.txt").write_text("a\n")
    cases = [
        (tmp_path / "a.parquet", opts(keep_columns="url"), r"a.parquet has no column 'url' \(it has text, n\): fix"),
        (tmp_path / "j.jsonl", opts(keep_columns="url"), r"first line of j.jsonl has no key 'url' \(it has text, lang"),
        (tmp_path / "t.txt", opts(keep_columns="url"), "plain text inputs have no columns to keep"),
        (str(tmp_path / "*.parquet"), opts(keep_columns="n"), r"kept column 'n' is int64 in a.parquet but double in b"),
    ]
    for k, (inputs, options, message) in enumerate(cases):
        with pytest.raises(InputError, match=message):
            embed_corpus(package, inputs, tmp_path / f"o{k}", options)
        assert not (tmp_path / f"o{k}").exists()  # refused before any output
    for kw, message in [
        ({"keep_columns": "id"}, "--keep-columns 'id' would collide with the shards' own 'id' column"),
        ({"keep_columns": "vector", "vector_column": "vector"}, "would collide with the shards' own 'vector'"),
        ({"keep_columns": "a,b,a"}, "--keep-columns names a twice"),
        ({"keep_columns": "a,,b"}, "column names must be non-empty strings"),
        ({"vector_column": "n_tokens"}, "--vector-column 'n_tokens' is a column the job writes itself"),
        ({"vector_column": "offsets", "output": "token"}, "--vector-column 'offsets' is a column the job writes"),
    ]:
        with pytest.raises(InputError, match=message):
            opts(**kw)
    code = main(["embed-corpus", str(package), "--input", str(tmp_path / "a.parquet"), "--out", str(tmp_path / "c"),
                 "--keep-columns", "text", "--keep-columns", "url", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "has no column 'url'" in err, err


def test_vector_column_and_provenance_in_every_shard(package, texts, tmp_path):
    """The variant, model and package hash are in _run.json and in every shard's footer, where DuckDB, polars and
    pyarrow read them: vectors of two variants, options or codecs cannot be mixed unnoticed."""
    import duckdb
    import polars as pl

    path = write_jsonl(tmp_path / "t.jsonl", [{"text": t} for t in texts])
    run = embed_corpus(package, str(path), tmp_path / "out", opts(vector_column="vector", dtype="int8"))
    data = tmp_path / "out" / "data"
    assert pq.read_schema(data / "part-00000.parquet").names == ["id", "vector", "n_tokens", "truncated"]
    assert run["package"]["variant"] == "fp32" and len(run["package"]["graph_sha256"]) == 64
    want = {"polyglot.model": run["package"]["model"], "polyglot.variant": "fp32",
            "polyglot.manifest_sha256": run["package"]["manifest_sha256"],
            "polyglot.graph_sha256": run["package"]["graph_sha256"], "polyglot.provider": "CPUExecutionProvider",
            "polyglot.options_sha256": run["fingerprint"]["options_sha256"], "polyglot.dtype": "int8",
            "polyglot.dimension": str(WIDTH), "polyglot.vector_column": "vector", "polyglot.run_id": run["run_id"]}
    for shard in sorted(data.glob("*.parquet")):
        meta = {k.decode(): v.decode() for k, v in pq.read_schema(shard).metadata.items()}
        assert {k: meta.get(k) for k in want} == want, shard.name
        assert pl.read_parquet_metadata(shard)["polyglot.variant"] == "fp32"
    rows = duckdb.sql(f"SELECT DISTINCT decode(value) FROM parquet_kv_metadata('{data}/*.parquet') "
                      "WHERE decode(key) = 'polyglot.variant'").fetchall()
    assert rows == [("fp32",)]
    embed_corpus(package, str(path), tmp_path / "tok", opts(vector_column="vector", output="token"))
    field = pq.read_schema(tmp_path / "tok" / "data" / "part-00000.parquet").field("vector")
    assert field.type == pa.list_(pa.list_(pa.field("element", pa.float32(), False), WIDTH))  # a list per token


def test_resume_refuses_changed_vector_or_kept_columns(package, texts, tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": t, "lang": "xx"} for t in texts])
    plain = embed_corpus(package, str(path), tmp_path / "plain", opts())
    assert not {"vector_column", "keep_columns"} & set(plain["options"])  # runs of earlier versions keep their hash
    out = tmp_path / "out"
    first = embed_corpus(package, str(path), out, opts(keep_columns="lang", vector_column="vector"))
    again = embed_corpus(package, str(path), out, opts(keep_columns=["lang"], vector_column="vector"), resume=True)
    assert again["fingerprint"] == first["fingerprint"] and again["options"]["keep_columns"] == ["lang"]
    with pytest.raises(JobError, match=r"other options \(keep_columns: \['lang'\] -> \['lang', 'text'\]\)"):
        embed_corpus(package, str(path), out, opts(keep_columns="lang,text", vector_column="vector"))
    with pytest.raises(JobError, match=r"keep_columns: \['lang'\] -> None"):
        embed_corpus(package, str(path), out, opts(vector_column="vector"))
    with pytest.raises(JobError, match=r"vector_column: 'vector' -> None"):
        embed_corpus(package, str(path), out, opts(keep_columns="lang"))


def test_a_format_1_run_resumes_in_its_own_layout(package, texts, tmp_path):
    """Runs of earlier versions have their shards beside _run.json: they verify, resume and stay there."""
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": t} for t in texts])
    embed_corpus(package, str(path), tmp_path / "ref", opts())
    out = tmp_path / "out"
    shutil.copytree(tmp_path / "ref", out)
    for shard in (out / "data").iterdir():
        shard.rename(out / shard.name)
    (out / "data").rmdir()
    run = json.loads((out / "_run.json").read_text())
    (out / "_run.json").write_text(json.dumps({**run, "format": "polyglot-onnx-corpus/1"}))
    assert embed_corpus(package, str(path), out, opts())["sessions"] == run["sessions"]  # verified: nothing redone
    data = bytearray((out / "part-00001.parquet").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / "part-00001.parquet").write_bytes(bytes(data))
    again = embed_corpus(package, str(path), out, opts())
    assert again["format"] == "polyglot-onnx-corpus/1" and again["sessions"][-1]["shards_committed"] == 1
    assert not (out / "data").exists() and pq.read_table(out).equals(pq.read_table(tmp_path / "ref"))


def test_ray_actor_and_assembler_carry_kept_columns(package, tmp_path):
    """The Ray engine's pieces (no cluster needed): the actor returns kept values in one struct column and its
    provider, and the driver's assembler turns them into the chunk the committer writes."""
    from polyglot_onnx.jobs.chunks import Position
    from polyglot_onnx.jobs.ray_actor import EmbedActor
    from polyglot_onnx.jobs.ray_engine import Assembler

    options = opts(keep_columns=("url", "n"), shard_size=4)
    actor = EmbedActor(str(package), options.to_dict(), "parquet", kept={"url": pa.string(), "n": pa.int32()})
    source = str(tmp_path / "x.parquet")
    batch = pa.table({"text": ["a b", None, "c d"], "url": ["u0", "u1", None], "n": pa.array([1, 2, 3], pa.int32()),
                      "path": [source] * 3})
    out = actor(batch)
    assert out.column("kept").type == pa.struct([("url", pa.string()), ("n", pa.int32())])
    assert out.column("kept").to_pylist()[1] == {"url": None, "n": None}  # a bad row keeps nothing
    plan = SimpleNamespace(paths=[Path(source)], start=Position(), options=options, width=WIDTH)
    assembler = Assembler(plan)
    assert not list(assembler.add(out, SimpleNamespace(update=lambda *a: None)))  # 3 rows: less than a shard
    ((chunk, encoded),) = list(assembler.flush())
    assert chunk.kept == {"url": ["u0", None, None], "n": [1, None, 3]} and chunk.reasons[1] == "missing text"
    assert encoded.provider == "CPUExecutionProvider" and encoded.vectors.shape == (2, WIDTH)
