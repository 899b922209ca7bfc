"""embed-corpus prompts and Matryoshka dimensions, and ``embed --precision`` (the shards read by other libraries:
test_jobs_output.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import sample_lines
from polyglot_onnx import Embedder
from polyglot_onnx.cli import main
from polyglot_onnx.errors import InputError, JobError
from polyglot_onnx.jobs import JobOptions, embed_corpus
from polyglot_onnx.runtime.sentence_options import PRECISIONS

pytestmark = pytest.mark.filterwarnings("ignore::polyglot_onnx.errors.TruncationWarning")


@pytest.fixture(scope="module")
def labse(labse: tuple[Path, Path]) -> Path:
    """The session's LaBSE-shaped package (CLS -> Dense -> Normalize, query/passage prompts, default 'query')."""
    return labse[1]


@pytest.fixture(scope="module")
def texts_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    texts = [" ".join(sample_lines()[i: i + 1 + i % 4]) for i in range(24)]
    path = tmp_path_factory.mktemp("texts") / "t.jsonl"
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return path, texts


def opts(**kw) -> JobOptions:
    return JobOptions(**{"shard_size": 10, "show_progress": False, **kw})


def vectors(out: Path) -> np.ndarray:
    return np.stack(pq.read_table(out).column("embedding").to_numpy(zero_copy_only=False))


def test_prompt_and_dimensions_equal_embedder_encode(labse, texts_file, tmp_path):
    path, texts = texts_file
    emb = Embedder.load(labse)
    run = embed_corpus(labse, str(path), tmp_path / "a", opts(prompt_name="passage", dimensions=16))
    got = vectors(tmp_path / "a")
    assert got.shape == (len(texts), 16)
    np.testing.assert_allclose(got, emb.encode(texts, prompt_name="passage", dimensions=16), atol=2e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)  # truncated, then normalized
    assert run["options"]["prompt_name"] == "passage" and run["options"]["dimensions"] == 16
    assert run["package"]["dimension"] == 16 and run["package"]["prompt"] == "passage: "
    # the token counts include the prompt, as the model sees it
    n_tokens = pq.read_table(tmp_path / "a").column("n_tokens").to_pylist()
    assert n_tokens == [len(e.ids) for e in emb.engine.text.encode(["passage: " + t for t in texts])]
    # no option: the package's default prompt ('query'), as Embedder.encode; an explicit '' prompt: none
    embed_corpus(labse, str(path), tmp_path / "b", opts())
    np.testing.assert_allclose(vectors(tmp_path / "b"), emb.encode(texts), atol=2e-6)
    run = embed_corpus(labse, str(path), tmp_path / "c", opts(prompt="", normalize=False, dimensions=8))
    np.testing.assert_allclose(vectors(tmp_path / "c"), emb.encode(texts, prompt="", normalize=False, dimensions=8),
                               atol=2e-6)
    assert run["options"]["prompt"] == "" and run["package"]["prompt"] is None


def test_ray_actor_applies_prompt_and_dimensions(labse, texts_file):
    """The Ray engine's actor gets the same options (no Ray cluster needed to call it)."""
    import pyarrow as pa

    from polyglot_onnx.jobs.ray_actor import EmbedActor

    path, texts = texts_file
    actor = EmbedActor(str(labse), opts(prompt_name="passage", dimensions=16).to_dict(), "jsonl")
    lines = path.read_bytes().split(b"\n")[:-1]
    out = actor(pa.table({"line": pa.array(lines, pa.binary()), "path": pa.array([str(path)] * len(lines))}))
    got = np.stack(out.column("embedding").to_numpy(zero_copy_only=False))
    expected = Embedder.load(labse).encode(texts, prompt_name="passage", dimensions=16)
    np.testing.assert_allclose(got, expected, atol=2e-6)


def test_resume_refuses_changed_prompt_or_dimensions(labse, texts_file, tmp_path):
    path, _ = texts_file
    out = tmp_path / "out"
    first = embed_corpus(labse, str(path), out, opts(prompt_name="passage", dimensions=16))
    again = embed_corpus(labse, str(path), out, opts(prompt_name="passage", dimensions=16), resume=True)
    assert again["fingerprint"] == first["fingerprint"]
    with pytest.raises(JobError, match=r"other options \(dimensions: 16 -> 8\)"):
        embed_corpus(labse, str(path), out, opts(prompt_name="passage", dimensions=8), resume=True)
    with pytest.raises(JobError, match=r"dimensions: 16 -> None"):
        embed_corpus(labse, str(path), out, opts(prompt_name="passage"), resume=True)
    with pytest.raises(JobError, match=r"prompt_name: 'passage' -> 'query'"):
        embed_corpus(labse, str(path), out, opts(prompt_name="query", dimensions=16), resume=True)
    with pytest.raises(JobError, match=r"prompt: None -> 'passage: '"):
        embed_corpus(labse, str(path), out, opts(prompt_name="passage", prompt="passage: ", dimensions=16),
                     resume=True)


def test_bad_prompt_and_dimensions_are_one_line(labse, texts_file, tmp_path):
    path, _ = texts_file
    with pytest.raises(InputError, match="dimensions must be a positive integer"):
        opts(dimensions=0)
    with pytest.raises(InputError, match="--dimensions is for sentence vectors only"):
        opts(dimensions=8, output="token")
    with pytest.raises(InputError, match="dimensions must be an integer from 1 to 64"):
        embed_corpus(labse, str(path), tmp_path / "a", opts(dimensions=65))
    with pytest.raises(InputError, match="unknown prompt name 'doc'.*passage, query"):
        embed_corpus(labse, str(path), tmp_path / "b", opts(prompt_name="doc"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before any output


def test_cli_embed_corpus_passes_prompt_and_dimensions(labse, texts_file, tmp_path, capsys):
    path, texts = texts_file
    code = main(["embed-corpus", str(labse), "--input", str(path), "--out", str(tmp_path / "o"), "--quiet",
                 "--prompt", "x: ", "--dimensions", "8"])
    assert code == 0, capsys.readouterr().err
    saved = json.loads((tmp_path / "o" / "_run.json").read_text())
    assert saved["options"]["prompt"] == "x: " and saved["options"]["dimensions"] == 8
    np.testing.assert_allclose(vectors(tmp_path / "o"), Embedder.load(labse).encode(texts, prompt="x: ", dimensions=8),
                               atol=2e-6)


def cli_json(capsys, *argv: str) -> tuple[int, object, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if code == 0 else None, captured.err


TEXTS = ["Le chat dort.", "東京は日本の首都", "The quick brown fox jumps over the lazy dog.", "Ok"]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_cli_embed_precision_equals_encode(tiny_models, capsys, precision):
    pkg = tiny_models["tiny-encoder"].package
    code, out, err = cli_json(capsys, "embed", str(pkg), "--json", "--precision", precision, *TEXTS)
    assert code == 0, err
    expected = Embedder.load(pkg).encode(TEXTS, precision=precision)
    if precision == "float32":
        np.testing.assert_allclose(out["embeddings"], expected, atol=1e-6)
    else:
        assert all(isinstance(x, int) for row in out["embeddings"] for x in row)
        assert out["embeddings"] == expected.tolist()  # exact integers


def test_cli_embed_ranges_and_bad_combinations(tiny_models, capsys, tmp_path):
    pkg = tiny_models["tiny-encoder"].package
    emb = Embedder.load(pkg)
    full = emb.encode(TEXTS)
    ranges = np.vstack((full.min(axis=0), full.max(axis=0)))
    (tmp_path / "r.json").write_text(json.dumps(ranges.tolist()))
    code, out, err = cli_json(capsys, "embed", str(pkg), "--json", "--precision", "uint8", "--ranges",
                              str(tmp_path / "r.json"), TEXTS[0])
    assert code == 0, err
    assert out["embeddings"] == emb.encode(TEXTS[:1], precision="uint8", ranges=ranges.astype(np.float32)).tolist()
    (tmp_path / "bad.json").write_text("[[1, 2], [3]]")
    (tmp_path / "pickle.npy").write_bytes(b"\x93NUMPY\x01\x00")
    cases = [
        (["--precision", "int8", TEXTS[0]], "int8 needs ranges"),
        (["--precision", "binary", "--ranges", str(tmp_path / "r.json"), *TEXTS], "for int8 or uint8 only"),
        (["--precision", "int8", "--output", "token", *TEXTS], "sentence embeddings only"),
        (["--precision", "int8", "--ranges", str(tmp_path / "bad.json"), *TEXTS], "two equal-length lists"),
        (["--precision", "int8", "--ranges", str(tmp_path / "pickle.npy"), *TEXTS], "is not JSON"),
        (["--precision", "int8", "--ranges", str(tmp_path / "none.json"), *TEXTS], "cannot be read"),
        (["--precision", "int8", "--dimensions", "8", "--ranges", str(tmp_path / "r.json"), *TEXTS], r"\(2, 8\)"),
    ]
    for argv, message in cases:
        code, _, err = cli_json(capsys, "embed", str(pkg), "--json", *argv)
        assert code == 1 and err.count("\n") == 1 and err.startswith("polyglot-onnx: error: "), (argv, err)
        assert re.search(message, err), (argv, err)


@pytest.mark.parametrize("long_text", ["truncate", "window"])
def test_tokenize_then_encode_tokenized_equals_encode(tiny_models, long_text):
    """The job's two halves (tokenize once, embed selected batches) give Embedder.encode's vectors."""
    emb = Embedder.load(tiny_models["tiny-bert"].package)
    texts = [" ".join(sample_lines()[i: i + 1 + i % 5]) for i in range(12)] + [" ".join(sample_lines()) * 3]
    expected = emb.encode(texts, long_text=long_text, prompt="q: ")
    tokenized = emb.tokenize(texts, long_text=long_text, prompt="q: ")
    assert tokenized.texts[0] == "q: " + texts[0]
    order = [5, 0, 12, 3]
    got = emb.encode_tokenized(tokenized.select(order), batch_size=len(order))
    np.testing.assert_allclose(got, expected[order], atol=1e-5)
    n_tokens, truncated = tokenized.token_counts()
    assert bool(truncated[-1]) == (long_text == "truncate") and not truncated[:-1].any()
    assert n_tokens[-1] > emb.engine.text.max_length if long_text == "window" else n_tokens[-1] == emb.engine.text.max_length
    with pytest.raises(InputError, match="encode_tokenized takes what Embedder.tokenize returns"):
        emb.encode_tokenized(texts)


def test_job_tokenizes_each_text_once(tiny_models, texts_file, tmp_path, monkeypatch):
    """Counting tokens for the batch budget must not tokenize a second time (it cost 0.64x of the ceiling)."""
    from polyglot_onnx.runtime.text import TextEncoder

    seen: list[int] = []
    original = TextEncoder.encode

    def counting(self, texts, *args, **kwargs):
        seen.append(len(texts))
        return original(self, texts, *args, **kwargs)

    monkeypatch.setattr(TextEncoder, "encode", counting)
    path, texts = texts_file
    embed_corpus(tiny_models["tiny-bert"].package, path, tmp_path / "out", opts())
    assert sum(seen) == len(texts) and seen == [10, 10, 4]  # shards of 10 rows, each tokenized once


def test_max_batch_tokens_auto(tiny_models, texts_file, tmp_path):
    from polyglot_onnx.jobs.cli import batch_tokens
    from polyglot_onnx.jobs.options import auto_batch_tokens

    assert [auto_batch_tokens(h) for h in (64, 384, 768, 1024, 4096)] == [4096, 1024, 512, 256, 256]
    assert batch_tokens("auto") is None and batch_tokens("300") == 300
    path, _ = texts_file
    run = embed_corpus(tiny_models["tiny-bert"].package, path, tmp_path / "out", opts())
    assert run["sessions"][-1]["settings"]["max_batch_tokens"] == auto_batch_tokens(64)
    assert main(["embed-corpus", str(tiny_models["tiny-bert"].package), "--input", str(path), "--out",
                 str(tmp_path / "o2"), "--max-batch-tokens", "50", "--quiet"]) == 0
    assert json.loads((tmp_path / "o2" / "_run.json").read_text())["sessions"][-1]["settings"]["max_batch_tokens"] == 50
    with pytest.raises(SystemExit):
        main(["embed-corpus", str(tiny_models["tiny-bert"].package), "--input", str(path), "--out",
              str(tmp_path / "o3"), "--max-batch-tokens", "lots"])
