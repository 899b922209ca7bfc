"""The drift checker's reports: JSON, Markdown with per-language tables, and a PNG plot."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from polyglot_onnx.errors import DependencyError
from polyglot_onnx.manifest import write_text_atomic
from polyglot_onnx.quantize.drift import DriftReport, failure_line

# Columns of the per-language table: (metric, header, format)
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("sentence_cosine_mean", "cos mean", "{:.5f}"),
    ("sentence_cosine_p5", "cos p5", "{:.5f}"),
    ("sentence_cosine_min", "cos min", "{:.5f}"),
    ("token_rel_error", "token rel err", "{:.2e}"),
    ("top1_agreement", "top-1", "{:.3f}"),
    ("top1_exact", "top-1 exact", "{:.3f}"),
    ("top5_overlap", "top-5", "{:.3f}"),
    ("kl_mean", "KL", "{:.2e}"),
    ("nonfinite", "NaN/Inf", "{:d}"),
)


def write_json(report: DriftReport, path: Path) -> None:
    write_text_atomic(path, json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")


def _table(groups: dict[str, dict[str, Any]], first: str) -> list[str]:
    present = [c for c in COLUMNS if any(c[0] in g for g in groups.values())]
    header = f"| {first} | texts | " + " | ".join(h for _, h, _ in present) + " |"
    lines = [header, "|" + "---|" * (len(present) + 2)]
    for label, figures in groups.items():
        cells = [fmt.format(figures[k]) if k in figures else "-" for k, _, fmt in present]
        lines.append(f"| {label} | {figures['texts']} | " + " | ".join(cells) + " |")
    return lines


def _machine_line(machine: dict[str, Any]) -> str:
    """int8 results depend on the CPU's int8 kernels: the report names the machine it was measured on."""
    if not machine:
        return "Measured on: not recorded"
    features = ", ".join(machine.get("features", [])) or "none of the int8 features"
    return (
        f"Measured on: {machine.get('model') or machine.get('arch')} · int8 kernels "
        f"**{machine.get('int8_kernel_class')}** ({features}) · onnxruntime {machine.get('onnxruntime')}, "
        f"{machine.get('provider')}"
    )


def markdown(report: DriftReport, plot_name: str | None) -> str:
    data = report.to_dict()
    corpus = data["corpus"]
    lines = [
        f"# Drift report: {Path(report.package).name}",
        "",
        f"Reference: **{report.reference}** · corpus {corpus['name']}: {corpus['texts']} texts, "
        f"{corpus['languages']} languages, {corpus['scripts']} scripts · checked {report.checked}",
        "",
        _machine_line(report.machine),
        "",
        f"Result: **{'PASS' if report.passed else 'FAIL'}**",
        "",
        "## Overall",
        "",
    ]
    lines += _table({name: v["overall"] for name, v in report.variants.items()}, "variant")
    if plot_name:
        lines += ["", f"![per-language drift]({plot_name})"]
    for name, result in report.variants.items():
        lines += ["", f"## {name}: {'pass' if result['passed'] else 'FAIL'}", ""]
        gate = ", ".join(f"{k} {v:g}" for k, v in result["gate"].items())
        lines += [f"Gate (every language and overall): {gate}", ""]
        lines += [f"- {failure_line(f)}" for f in result["failures"]]
        if result["failures"]:
            lines.append("")
        lines += _table(result["by_language"], "language")
        lines += ["", "By script:", ""] + _table(result["by_script"], "script")
        loc = result.get("localization")
        if loc and loc.get("layers"):
            where = loc["diverges_at"]
            lines += [
                "",
                f"Layer localization against {loc['reference']}: "
                + (f"**first diverging layer: {where}** (SQNR below {loc['sqnr_floor_db']:g} dB)" if where is not None
                   else f"no layer below {loc['sqnr_floor_db']:g} dB")
                + f"; largest single-layer drop at layer {loc['largest_drop_at']}.",
                "",
                "| layer | SQNR dB | cosine |",
                "|---|---|---|",
            ]
            lines += [f"| {e['layer']} | {e['sqnr_db']:.1f} | {e['cosine']:.5f} |" for e in loc["layers"]]
    return "\n".join(lines) + "\n"


def plot(report: DriftReport, path: Path) -> None:
    """Per language: 1 - cos p5 (log scale) and top-1 agreement when the package has a head."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise DependencyError(
            "the drift plot needs matplotlib: pip install 'polyglot-onnx[quantize]' (or omit --markdown)"
        ) from err
    variants = list(report.variants)
    languages = sorted({lang for v in report.variants.values() for lang in v["by_language"]})
    has_fill = any("top1_agreement" in v["overall"] for v in report.variants.values())
    fig, axes = plt.subplots(2 if has_fill else 1, 1, figsize=(max(8, 0.45 * len(languages) + 3), 7 if has_fill else 4))
    axes = list(axes) if has_fill else [axes]
    width = 0.8 / max(len(variants), 1)
    for i, name in enumerate(variants):
        groups = report.variants[name]["by_language"]
        xs = [k + i * width for k in range(len(languages))]
        gap = [max(1 - groups[lang]["sentence_cosine_p5"], 1e-9) if lang in groups else 0 for lang in languages]
        axes[0].bar(xs, gap, width, label=name)
        if has_fill:
            top1 = [groups[lang].get("top1_agreement", 0) if lang in groups else 0 for lang in languages]
            axes[1].bar(xs, top1, width, label=name)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("1 - sentence cosine (p5)")
    axes[0].set_title(f"Drift per language vs {report.reference} ({Path(report.package).name})")
    if has_fill:
        axes[1].set_ylabel("fill-mask top-1 agreement")
        axes[1].set_ylim(0, 1.05)
    for ax in axes:
        ax.set_xticks([k + 0.4 - width / 2 for k in range(len(languages))])
        ax.set_xticklabels(languages, rotation=60, fontsize=8)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def write_markdown(report: DriftReport, path: Path) -> Path:
    """Markdown at ``path`` and the plot beside it (``<stem>.png``); returns the plot's path."""
    image = path.with_suffix(".png")
    plot(report, image)
    write_text_atomic(path, markdown(report, image.name))
    return image
