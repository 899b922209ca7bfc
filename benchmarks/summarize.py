"""The short form of every published bench run, for the READMEs: targets, batch-1 latency, corpus.

    python benchmarks/summarize.py [--write benchmarks/README.md]

Reads each run's targets.json and results.jsonl under benchmarks/results/bench (written by
``polyglot-onnx bench``) and prints Markdown, or with --write replaces the block between
``<!-- bench-summary:LINK_ROOT -->`` and ``<!-- /bench-summary -->`` in each file (LINK_ROOT:
where the run folders are, relative to that file). The full tables stay in each run's results.md.
"""

from __future__ import annotations

import argparse
import json
import re
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
    title = (f"**{run.name}** ([table]({link_root}/{run.name}/results.md); peaks this run: "
             f"fp32 {peaks['fp32_peak_gflops']} GFLOP/s, int8 {peaks['int8_peak_gops']} GOP/s)")
    out = [title, "",
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


ROOT = Path(__file__).parent / "results" / "bench"
BLOCK = re.compile(r"(<!-- bench-summary:(?P<root>[^ ]+) -->\n).*?(<!-- /bench-summary -->)", re.DOTALL)


def runs() -> list[Path]:
    return sorted(p for p in ROOT.iterdir() if (p / "targets.json").is_file())


def block(link_root: str) -> str:
    return "\n".join(line for run in runs() for line in summarize(run, link_root))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", nargs="*", type=Path, default=None, help="Markdown files with a summary block")
    args = parser.parse_args()
    if args.write is None:
        print(block("benchmarks/results/bench"))
        return
    for path in args.write:
        text = path.read_text(encoding="utf-8")
        new, count = BLOCK.subn(lambda m: m.group(1) + block(m.group("root")) + m.group(3), text)
        if not count:
            raise SystemExit(f"{path} has no <!-- bench-summary:ROOT --> block")
        path.write_text(new, encoding="utf-8")
        print(f"{path}: summary of {len(runs())} runs written")


if __name__ == "__main__":
    main()
