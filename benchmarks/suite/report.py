"""results.jsonl, results.md and the plots: the side-by-side view of one run."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from polyglot_onnx.bench.workloads import DOCUMENT
from polyglot_onnx.manifest import write_text_atomic

PLOTS = ("latency_vs_seq.png", "throughput_vs_batch.png")


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _others(rows: list[dict[str, Any]]) -> list[str]:
    """Contenders to show speed-ups against: every non-polyglot label, in run order."""
    seen: list[str] = []
    for row in rows:
        if row["family"] != "polyglot" and row["label"] not in seen:
            seen.append(row["label"])
    return seen


def _table(rows: list[dict[str, Any]], others: list[str], corpus_range: str) -> list[str]:
    head = ["contender", "batch", "seq", "p50 ms", "p90 ms", "p99 ms", "n", "seq/s", "tok/s", "GFLOP/s", "% peak",
            "load s", "peak RSS MB", "size MB", *[f"× vs {o}" for o in others]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        seq = row["seq"] if row["kind"] == "fixed" else corpus_range
        if "p50_ms" not in row:
            why = row.get("skipped") or row.get("error")
            cells = [row["label"], str(row["batch"]), str(seq), f"not run: {why}"] + [""] * (len(head) - 4)
        else:
            ratio = row.get("peak_ratio")
            cells = [row["label"], str(row["batch"]), str(seq), _fmt(row["p50_ms"]), _fmt(row["p90_ms"]),
                     _fmt(row["p99_ms"]), str(row["iters"]), _fmt(row["seq_per_s"]), _fmt(row["tok_per_s"], 0),
                     _fmt(row.get("gflops")), "—" if ratio is None else f"{100 * ratio:.0f}%", _fmt(row["load_s"], 2),
                     _fmt(row["peak_rss_mb"], 0), _fmt(row["size_mb"], 0),
                     *[_fmt(row.get("speedup_vs", {}).get(o), 2) for o in others]]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _document_table(rows: list[dict[str, Any]], max_length: int | None) -> list[str]:
    """Cost per 1,000 tokens of one whole document, and the row's own peak RSS."""
    head = ["contender", "tokens", "how", "p50 ms", "ms / 1,000 tokens", "n", "peak RSS MB (this row)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        how = "windowed" if max_length and row["tokens"] > max_length else "native"
        if "p50_ms" not in row:
            cells = [row["label"], str(row["tokens"]), how, f"not run: {row.get('skipped') or row.get('error')}", "", "", ""]
        else:
            rss = _fmt(row["peak_rss_mb"], 0) + ("" if row.get("peak_rss_scope") == "row" else " (process)")
            cells = [row["label"], str(row["tokens"]), how, _fmt(row["p50_ms"]), _fmt(row["ms_per_1k_tokens"], 2),
                     str(row["iters"]), rss]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(summary: dict[str, Any]) -> str:
    ctx, rows = summary["context"], summary["rows"]
    m, peaks = ctx["machine"], ctx["peaks"]
    lib = ", ".join(f"{k} {v}" for k, v in ctx["versions"].items())
    out = [
        f"# Benchmark: {ctx['model']} ({'random weights, ' if ctx['random_weights'] else ''}{m['provider']})",
        "",
        (f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GiB; SIMD {' '.join(m['simd']) or 'n/a'}"
         + (f"; GPU {m['gpu']}" if m.get("gpu") else "")),
        f"- Threads: {m['threads']} (intra-op for onnxruntime, torch.set_num_threads for PyTorch); provider {m['provider']}",
        f"- Versions: {lib}",
        (f"- Measured peaks, same run: fp32 MatMul {peaks['fp32_peak_gflops']} GFLOP/s, int8 MatMulInteger "
         f"{peaks['int8_peak_gops']} GOP/s (2048 cube); at the 128×768×3072 FFN shape {peaks['fp32_ffn_gflops']} / "
         f"{peaks['int8_ffn_gops']}"
         + (f"; GPU fp16 MatMul {peaks['fp16_peak_tflops']} TFLOP/s (8192 cube, onnxruntime CUDA)"
            if peaks.get("fp16_peak_tflops") else "")),
        (f"- Timing: {ctx['timing']['warmup']} warm-up call(s), then repeated until {ctx['timing']['budget_s']} s and "
         f"at least {ctx['timing']['min_iters']} calls (at most {ctx['timing']['max_iters']}); the corpus row is one "
         "timed pass after one warm-up batch. GFLOP/s counts model FLOPs (LM head on the masked row only); % peak is "
         "against the int8 peak for int8 variants, the fp32 peak otherwise, and on CUDA the GPU fp16 peak for fp16 "
         "rows."),
        f"- Date: {ctx['date']}; command: `{ctx['command']}`",
        "",
    ]
    if summary["targets"]:
        out += ["## Targets", "", "| target | ours | against | needed | measured (worst row) | at | met |",
                "|---|---|---|---|---|---|---|"]
        for t in summary["targets"]:
            met = "not measured" if t["met"] is None else ("yes" if t["met"] else "**no**")
            out.append(f"| {t['target']} ({t['provider']}) | {t['ours']} | {t['theirs']} | ≥ {t['minimum']} | "
                       f"{_fmt(t['measured'], 2)} | {t['at'] or '—'} | {met} |")
        out.append("")
    others = _others(rows)
    for task in dict.fromkeys(r["task"] for r in rows):
        for kind in dict.fromkeys(r["kind"] for r in rows if r["task"] == task):
            mine = [r for r in rows if r["task"] == task and r["kind"] == kind]
            mine.sort(key=lambda r: (r["batch"], r["seq"]))
            corpus = summary["context"].get("corpus")
            if kind == DOCUMENT:
                limit = summary["context"].get("max_length")
                out += [f"## {task} — whole documents, batch 1 (model maximum {limit} tokens; longer is windowed)",
                        "", *_document_table(mine, limit), ""]
                continue
            title = _corpus_title(corpus) if kind == "corpus" else "fixed length"
            span = f"{corpus['shortest']}–{corpus['longest']}" if corpus else "mixed"
            out += [f"## {task} — {title}", "", *_table(mine, others, span), ""]
    out += ["## Plots", "", *[f"![{p}]({p})" for p in PLOTS], ""]
    return "\n".join(out)


def _corpus_title(corpus: dict[str, int] | None) -> str:
    if not corpus:
        return "corpus, arrival order"
    return (f"corpus: {corpus['texts']:,} texts of {corpus['shortest']}–{corpus['longest']} tokens "
            f"({corpus['tokens']:,} in all), arrival order")


def plot(summary: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary["rows"] if "p50_ms" in r and r["kind"] == "fixed"]
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    labels = list(dict.fromkeys(r["label"] for r in rows))
    def panels() -> tuple[Any, Any]:
        return plt.subplots(1, max(1, len(tasks)), figsize=(6 * max(1, len(tasks)), 4.5), squeeze=False)

    def finish(fig: Any, axes: Any, name: str) -> None:
        for ax in axes[0]:
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out / name)
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)

    paths: list[Path] = []
    fig, axes = panels()
    for ax, task in zip(axes[0], tasks):
        for label in labels:
            pts = sorted((r["seq"], r["p50_ms"]) for r in rows if r["task"] == task and r["label"] == label and r["batch"] == 1)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=label)
        ax.set(xscale="log", yscale="log", xlabel="sequence length (tokens)", ylabel="p50 latency, ms (batch 1)",
               title=f"{summary['context']['model']} {task}")
    finish(fig, axes, PLOTS[0])

    seqs = sorted({r["seq"] for r in rows})
    fig, axes = panels()
    for ax, task in zip(axes[0], tasks):
        seq = 128 if 128 in seqs else seqs[len(seqs) // 2]
        for label in labels:
            pts = sorted((r["batch"], r["tok_per_s"]) for r in rows if r["task"] == task and r["label"] == label and r["seq"] == seq)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=label)
        corpus = [r for r in summary["rows"] if r["task"] == task and r["kind"] == "corpus" and "tok_per_s" in r]
        for r in corpus:
            ax.scatter([r["batch"]], [r["tok_per_s"]], marker="*", s=120)
            ax.annotate(f"{r['label']} corpus", (r["batch"], r["tok_per_s"]), fontsize=7)
        ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="tokens/s",
               title=f"{summary['context']['model']} {task}, seq {seq} (stars: mixed-length corpus)")
    finish(fig, axes, PLOTS[1])
    return paths


def write_report(summary: dict[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps({**row, "context": {k: v for k, v in summary["context"].items()
                                                   if k not in ("machine", "versions")}}) + "\n"
                    for row in summary["rows"])
    write_text_atomic(out / "results.jsonl", lines)
    write_text_atomic(out / "targets.json", json.dumps(summary["targets"], indent=2) + "\n")
    try:
        plots = plot(summary, out)
    except ImportError:  # a bare GPU image may lack matplotlib: the tables still count
        print("bench: no plots (matplotlib is not installed); tables written", file=sys.stderr)
        plots = []
    write_text_atomic(out / "results.md", markdown(summary))
    return {"jsonl": out / "results.jsonl", "markdown": out / "results.md", **{p.stem: p for p in plots}}
