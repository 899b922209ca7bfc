"""The short form of every published bench run, for the READMEs: targets, batch-1 latency, corpus.

    python benchmarks/summarize.py [benchmarks/results/bench]

Reads each run's targets.json and results.jsonl (written by ``polyglot-onnx bench``) and prints
Markdown; the full tables stay in each run's results.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _cell(rows: list[dict[str, Any]], label: str, task: str, seq: int) -> str:
    row = next((r for r in rows if r["label"] == label and r["task"] == task and r["kind"] == "fixed"
                and r["batch"] == 1 and r["seq"] == seq), None)
    if row is None:
        return "—"
    return f"{row['p50_ms']:,.1f}" if "p50_ms" in row else "skipped" if "skipped" in row else "failed"


def summarize(run: Path, link_root: str) -> list[str]:
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    targets = json.loads((run / "targets.json").read_text(encoding="utf-8"))
    peaks = rows[0]["context"]["peaks"]
    out = [f"**{run.name}** ([table]({link_root}/{run.name}/results.md); peaks this run: "
           f"fp32 {peaks['fp32_peak_gflops']} GFLOP/s, int8 {peaks['int8_peak_gops']} GOP/s)", "",
           "| target | needed | measured (worst row) | at | met |", "|---|---|---|---|---|"]
    for t in targets:
        met = "not measured" if t["met"] is None else ("yes" if t["met"] else "**no**")
        measured = "—" if t["measured"] is None else f"{t['measured']:.2f}"
        out.append(f"| {t['target']} | ≥ {t['minimum']} | {measured} | {t['at'] or '—'} | {met} |")
    seqs = sorted({r["seq"] for r in rows if r["kind"] == "fixed" and r["batch"] == 1})
    tasks = list(dict.fromkeys(r["task"] for r in rows if r["kind"] == "fixed"))
    head = [f"{task} s{seq}" for task in tasks for seq in seqs]
    out += ["", "| batch 1, p50 ms | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for label in dict.fromkeys(r["label"] for r in rows):
        out.append(f"| {label} | " + " | ".join(_cell(rows, label, t, s) for t in tasks for s in seqs) + " |")
    corpus = [r for r in rows if r["kind"] == "corpus" and "tok_per_s" in r]
    if corpus:
        out += ["", "Corpus (embed, batch 32, arrival order): "
                + ", ".join(f"{r['label']} {r['tok_per_s']:,.0f} tok/s" for r in corpus)]
    return out + [""]


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/bench")
    for run in sorted(p for p in root.iterdir() if (p / "targets.json").is_file()):
        print("\n".join(summarize(run, str(root))))


if __name__ == "__main__":
    main()
