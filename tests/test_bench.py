"""The benchmark suite: a smoke run on the tiny fixtures (one contender pair, few iterations) plus its parts."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from conftest import Tiny
from polyglot_onnx.bench import BenchOptions, TimingPolicy, run_bench
from polyglot_onnx.bench.flops import Shape, call_flops
from polyglot_onnx.bench.targets import evaluate
from polyglot_onnx.bench.workloads import TextCutter, corpus_workload
from polyglot_onnx.cli import main
from polyglot_onnx.errors import BenchError


@pytest.fixture(scope="session")
def smoke(tiny_models: dict[str, Tiny], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench")
    options = BenchOptions(
        model=str(tiny_models["tiny-bert"].checkpoint), out=out, contenders=("torch", "polyglot"),
        batches=(1, 4), seqs=(16, 40), corpus_size=24, corpus_batch=8, document_seqs=(300,),
        timing=TimingPolicy(warmup=1, min_iters=2, max_iters=3, budget_s=0.0), show_progress=False,
    )
    return out, run_bench(options)


def test_smoke_run_times_every_contender_on_every_row(smoke: tuple[Path, dict[str, Any]]) -> None:
    out, summary = smoke
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    labels = {r["label"] for r in rows}
    assert labels == {"torch:fp32", "polyglot:fp32", "polyglot:int8"}
    # 2 tasks x 2 batches x 2 lengths fixed rows + 1 corpus row, per contender; a document row per polyglot variant
    documents = [r for r in rows if r["kind"] == "document"]
    rows = [r for r in rows if r["kind"] != "document"]
    assert len(rows) == 3 * (2 * 2 * 2 + 1)
    assert sorted(r["label"] for r in documents) == ["polyglot:fp32", "polyglot:int8"]
    for row in documents:  # 300 tokens: windowed past tiny-bert's 256; memory measured for the row itself
        assert row["task"] == "embed" and row["batch"] == 1 and abs(row["tokens"] - 300) <= 2
        assert row["ms_per_1k_tokens"] == pytest.approx(row["p50_ms"] * 1000 / row["tokens"], rel=1e-3)
        assert row["peak_rss_scope"] == "row" and row["peak_rss_mb"] > 50 and row["load_peak_rss_mb"] > 50
    for row in rows:
        assert "error" not in row and "skipped" not in row, row
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
        assert row["tok_per_s"] > 0 and row["gflops"] > 0 and 0 <= row["peak_ratio"] < 1.5
        assert row["machine"]["threads"] == 2 and row["versions"]["onnxruntime"]
        assert row["load_s"] > 0 and row["peak_rss_mb"] > 50 and row["size_mb"] > 0
        others = labels - {row["label"]}
        assert set(row["speedup_vs"]) == others
    corpus = [r for r in rows if r["kind"] == "corpus"]
    assert {r["texts"] for r in corpus} == {24}
    # the tokens counted for a fixed row are the tokens the texts really have
    fixed = next(r for r in rows if r["kind"] == "fixed" and r["batch"] == 4 and r["seq"] == 40)
    assert abs(fixed["tokens"] - 160) <= 4
    assert summary["context"]["peaks"]["int8_peak_gops"] > 0


def test_smoke_run_writes_table_and_plots(smoke: tuple[Path, dict[str, Any]]) -> None:
    out, _ = smoke
    text = (out / "results.md").read_text()
    assert "| torch:fp32 | 1 | 16 |" in text and "× vs torch:fp32" in text
    assert "## embed — corpus: 24 texts of " in text and "Measured peaks" in text
    assert "## embed — whole documents, batch 1 (model maximum 256 tokens; longer is windowed)" in text
    assert re.search(r"\| polyglot:fp32 \| 3\d\d \| windowed \| [\d.,]+ \| [\d.,]+ \|", text)
    for name in ("latency_vs_seq.png", "throughput_vs_batch.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"


def test_a_stale_variant_is_rebuilt_before_timing(smoke: tuple[Path, dict[str, Any]],
                                                 tiny_models: dict[str, Tiny]) -> None:
    from polyglot_onnx.bench.prepare import ensure_package
    from polyglot_onnx.quantize.recipes import RECIPES

    out, _ = smoke
    package = out / "work" / "packages" / "tiny-bert"
    manifest_path = package / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["variants"]["int8"]["extra"]["recipe_revision"] == RECIPES["int8"].revision
    manifest["variants"]["int8"]["extra"]["recipe_revision"] = 0  # as if built by an older recipe
    manifest_path.write_text(json.dumps(manifest))
    before = (package / "model.int8.onnx").stat().st_mtime_ns
    ensure_package(tiny_models["tiny-bert"].checkpoint, package, ["fp32", "int8"], 2, False)
    refreshed = json.loads(manifest_path.read_text())["variants"]["int8"]["extra"]
    assert refreshed["recipe_revision"] == RECIPES["int8"].revision
    assert (package / "model.int8.onnx").stat().st_mtime_ns != before


def test_a_crashed_worker_marks_its_unreached_rows(tmp_path: Path) -> None:
    from polyglot_onnx.bench.contenders import ContenderSpec
    from polyglot_onnx.bench.suite import _read_rows, _record_missing
    from polyglot_onnx.bench.workloads import Workload

    spec = ContenderSpec("optimum", "O2", "cpu", 2, "ckpt", {"embed": "model.onnx"})
    workloads = [Workload("embed", 1, seq, ["x"] * 1, [seq]) for seq in (32, 128, 512)]
    rows_path = tmp_path / "rows.jsonl"
    rows_path.write_text(json.dumps({"label": spec.label, "task": "embed", "kind": "fixed", "batch": 1, "seq": 32,
                                     "p50_ms": 1.0}) + "\n")
    _record_missing(spec, workloads, rows_path, "worker killed (exit -9)")
    rows = _read_rows(rows_path)
    assert [r["seq"] for r in rows] == [32, 128, 512]
    assert "error" not in rows[0] and all(r["error"] == "worker killed (exit -9)" for r in rows[1:])
    assert all(r["label"] == "optimum:O2" and "graphs" not in r for r in rows[1:])


def test_text_cutter_hits_exact_lengths(tiny_models: dict[str, Tiny]) -> None:
    for name in ("tiny-bert", "tiny-modernbert"):
        ckpt = tiny_models[name].checkpoint
        cutter = TextCutter(ckpt / "tokenizer.json", tiny_models[name].mask_token)
        for seq in (8, 32, 128, 300):
            plain, masked = cutter.text(seq, False), cutter.text(seq, True)
            assert abs(cutter.length(plain) - seq) <= 1 and abs(cutter.length(masked) - seq) <= 1
            assert masked.count(tiny_models[name].mask_token or "") == 1
        corpus = corpus_workload(cutter, 50, 8)
        lengths = [cutter.length(t) for t in corpus.texts]
        assert corpus.lengths == lengths and corpus.tokens == sum(lengths)
        assert len(lengths) == 50 and min(lengths) >= 4 and max(lengths) <= 402 and len(set(lengths)) > 10


def test_flops_match_a_hand_count() -> None:
    bert = Shape("bert", layers=12, hidden=768, intermediate=3072, vocab=119547)
    # per token per layer: 4*768^2 + 2*768*3072 MACs; attention 2*s^2*h per layer; head h^2 + h*V per mask
    enc = 2 * 12 * (128 * (4 * 768**2 + 2 * 768 * 3072) + 2 * 128**2 * 768)
    assert call_flops(bert, "embed", [128]) == enc
    assert call_flops(bert, "fill-mask", [128]) == enc + 2 * (768**2 + 768 * 119547)
    modern = Shape("modernbert", layers=22, hidden=768, intermediate=1152, vocab=256000)
    assert modern.linear_macs_per_token == 4 * 768**2 + 3 * 768 * 1152


def _row(label: str, task: str, p50: float, batch: int = 1, seq: int = 128, kind: str = "fixed") -> dict[str, Any]:
    return {"label": label, "task": task, "kind": kind, "batch": batch, "seq": seq, "provider": "cpu",
            "p50_ms": p50, "tok_per_s": 1000.0 / p50}


def test_targets_report_met_missed_and_unmeasured() -> None:
    rows = [_row("polyglot:int8", "fill-mask", 10.0), _row("optimum:int8", "fill-mask", 25.0),
            _row("torch:fp32", "fill-mask", 50.0)]
    results = {t["target"]: t for t in evaluate(rows, "mbert-cased")}
    assert results["fill-mask int8 vs Optimum int8"]["met"] is True
    assert results["fill-mask int8 vs Optimum int8"]["measured"] == 2.5
    assert results["fill-mask int8 vs PyTorch eager"]["met"] is False  # 5x < 6.5x
    assert results["embed int8 vs Optimum int8, batch 1"]["met"] is None  # no embed rows: not measured, never met
    assert evaluate(rows, "tiny-bert") == []


def test_bench_errors_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["bench", "org/not-local", "--quiet", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not a local checkpoint directory" in err
    assert main(["bench", "tiny-bert", "--contenders", "tensorflow", "--out", str(tmp_path)]) == 1
    assert "unknown contender 'tensorflow'" in capsys.readouterr().err
    assert main(["bench", "tiny-bert", "--batch", "one", "--out", str(tmp_path)]) == 1
    assert "--batch must be comma-separated integers" in capsys.readouterr().err
    with pytest.raises(BenchError, match="--random-weights"):
        from polyglot_onnx.bench.prepare import resolve_checkpoint

        resolve_checkpoint("mbert-cased", False, tmp_path)


def test_optimum_env_refuses_a_directory_that_is_not_a_venv(tmp_path: Path) -> None:
    """The set-up path takes its lock before touching the directory, and never wipes a non-venv."""
    from polyglot_onnx.bench.optimum_route import ensure_env

    target = tmp_path / "not-a-venv"
    target.mkdir()
    (target / "keep.txt").write_text("user data", encoding="utf-8")
    with pytest.raises(BenchError, match="is not a virtualenv"):
        ensure_env(target, log=lambda _msg: None)
    assert (target / "keep.txt").read_text(encoding="utf-8") == "user data"


def test_dense_contender_times_the_dense_attention_package_beside_the_banded_one(
        tiny_models: dict[str, Tiny], tmp_path: Path) -> None:
    """The 'dense' family is the same checkpoint exported with dense local attention, in its own package."""
    options = BenchOptions(
        model=str(tiny_models["tiny-modernbert"].checkpoint), out=tmp_path / "out", work=tmp_path / "work",
        tasks=("embed",), contenders=("polyglot", "dense"), variants={"polyglot": ("fp32",), "dense": ("fp32",)},
        batches=(1,), seqs=(40,), corpus_size=0, document_seqs=(),
        timing=TimingPolicy(warmup=1, min_iters=2, max_iters=2, budget_s=0.0), show_progress=False,
    )
    summary = run_bench(options)
    timed = {r["label"] for r in summary["rows"] if "p50_ms" in r}
    assert timed == {"polyglot:fp32", "dense:fp32"}
    manifests = {d.name: json.loads((d / "manifest.json").read_text(encoding="utf-8"))
                 for d in (tmp_path / "work" / "packages").iterdir()}
    attention = {name: m["model"]["local_attention"] for name, m in manifests.items()}
    assert attention == {"tiny-modernbert": "banded", "tiny-modernbert-dense": "dense"}


def test_published_command_names_no_machine_paths() -> None:
    from polyglot_onnx.bench.suite import published_command

    argv = ["/opt/venv/bin/polyglot-onnx", "bench", "/data/ckpt", "--work", "/tmp/w", "--out", "results/x"]
    assert published_command(argv) == "polyglot-onnx bench ckpt --work WORK --out results/x"


def test_ortopt_contender_times_the_onnxruntime_optimizer_graph(tiny_models: dict[str, Tiny], tmp_path: Path) -> None:
    """'ortopt' builds onnxruntime.transformers.optimizer's graph (Optimum O4's, without Optimum) and times it."""
    options = BenchOptions(
        model=str(tiny_models["tiny-bert"].checkpoint), out=tmp_path / "out", work=tmp_path / "work",
        contenders=("ortopt", "polyglot"), variants={"polyglot": ("fp32",)},
        batches=(2,), seqs=(24,), corpus_size=0, document_seqs=(),
        timing=TimingPolicy(warmup=1, min_iters=2, max_iters=2, budget_s=0.0), show_progress=False,
    )
    summary = run_bench(options)
    timed = {(r["label"], r["task"]) for r in summary["rows"] if "p50_ms" in r}
    assert timed == {(f, t) for f in ("ortopt:fp32", "polyglot:fp32") for t in ("fill-mask", "embed")}
    builds = sorted((tmp_path / "work" / "ortopt").rglob("summary.json"))
    assert len(builds) == 2
    for build in builds:  # the optimizer fused BERT's attention and layer norms, as it does for Optimum O2 / O4
        fused = json.loads(build.read_text(encoding="utf-8"))["fused"]
        assert fused["Attention"] == 2 and fused["SkipLayerNormalization"] >= 4


def test_cuda_targets_cover_budget_peak_and_cross_task_rows() -> None:
    def row(label: str, task: str, p50: float, batch: int, seq: int, **extra: Any) -> dict[str, Any]:
        variant = label.split(":")[1]
        return {"label": label, "variant": variant, "task": task, "kind": "fixed", "provider": "cuda",
                "batch": batch, "seq": seq, "p50_ms": p50, **extra}

    rows = [row("polyglot:fp16", "embed", 0.8, 1, 128), row("polyglot:fp32", "embed", 0.7, 1, 128),
            row("polyglot:fp16", "embed", 10.0, 64, 128), row("polyglot:fp16", "fill-mask", 14.0, 64, 128),
            row("polyglot:fp16", "embed", 30.0, 64, 512, peak_ratio=0.45), row("torch:fp16", "embed", 50.0, 64, 512),
            row("ortopt:fp16", "embed", 36.0, 64, 512)]
    results = {t["target"]: t for t in evaluate(rows, "mbert-cased")}
    assert results["embed fp16 b1 x 128 within 1.0 ms"]["measured"] == 1.25  # 1.0 ms budget / 0.8 ms
    assert results["embed fp16 never slower than fp32 on CUDA"]["met"] is False  # 0.7 / 0.8
    assert results["fill-mask fp16 b64 x 128 within 1.5x of embed"]["measured"] == pytest.approx(15 / 14, abs=1e-3)
    assert results["embed fp16 share of the GPU fp16 peak, b64 x 512"]["measured"] == 0.45
    assert results["embed fp16 vs PyTorch fp16 SDPA, b64 x 512"]["met"] is False  # 50 / 30 < 2
    assert results["embed fp16 vs ORT optimizer fp16 (Optimum O4's graph), b64 x 512"]["measured"] == 1.2
    assert results["mixed-length corpus fp16 vs PyTorch fp16 throughput"]["met"] is None  # no corpus row


def test_gpu_peak_measures_an_fp16_matmul_through_io_binding() -> None:
    from polyglot_onnx.bench.machine import measure_gpu_peak

    # the CUDA code path on the CPU provider (CI has no GPU): a small fp16 MatMul, device-bound inputs
    assert measure_gpu_peak(size=64, seconds=0.05, provider="cpu") > 0
