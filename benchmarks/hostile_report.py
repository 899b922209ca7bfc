"""The hostile-clients benchmark's report: the machine block, each target met or missed, the Markdown."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    import onnxruntime
    import tokenizers
    import uvicorn

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "tokenizers": tokenizers.__version__,
            "uvicorn": uvicorn.__version__, "platform": platform.platform()}


def verdicts(slow: dict[str, Any], heavy: list[dict[str, Any]], mem: dict[str, Any]) -> list[dict[str, Any]]:
    base = slow["unloaded"]["p99_ms"]
    rows = []
    for name in ("spread", "one_address"):
        legit_ = slow[name]["legit"]
        refused = legit_["statuses"].get("429", 0)
        ok = legit_["p99_ms"] <= 2 * base and refused == 0 and set(legit_["statuses"]) == {"200"}
        rows.append({"target": f"{slow[name]['hostile_connections']} slow/idle connections ({name}): legit p99 <= "
                               "2x unloaded, no 429",
                     "measured": f"p99 {legit_['p99_ms']} ms vs unloaded {base} ms; statuses {legit_['statuses']}",
                     "met": ok})
    for h in heavy:
        rows.append({"target": f"small /embed <= 250 ms while the costliest {h['route']} runs",
                     "measured": f"max {h['small_max_ms']} ms, p99 {h['small_p99_ms']} ms over {h['small_requests']} "
                                 f"requests ({h['work_tokens']} tokens of work, {h['answer_mb']} MB answer, "
                                 f"{h['heavy_seconds']} s)",
                     "met": h["small_max_ms"] <= 250 and h["status"] == 200})
    rows.append({"target": f"{mem['sequential']} sequential ~2 MB requests: RSS after <= 1.2x before",
                 "measured": f"{mem['rss_before_mb']} -> {mem['rss_after_mb']} MB ({mem['after_over_before']}x; "
                             f"peak {mem['sequential_peak_mb']} MB)",
                 "met": mem["after_over_before"] <= 1.2})
    rows.append({"target": f"{mem['concurrent']} concurrent ~2 MB requests: peak RSS <= 1 GB",
                 "measured": f"{mem['concurrent_peak_mb']} MB", "met": mem["concurrent_peak_mb"] <= 1024})
    return rows


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "# Hostile clients (issue 25)", "",
        f"`{result['command']}`", "",
        (f"{result['model']}, {result['threads']} onnxruntime threads, default server limits; {m['cpu']}, "
        f"{m['cores']} cores; Python {m['python']}, onnxruntime {m['onnxruntime']}, tokenizers {m['tokenizers']}, "
        f"uvicorn {m['uvicorn']}."), "",
        "| target | measured | met |", "|---|---|---|",
    ]
    lines += [f"| {r['target']} | {r['measured']} | {'met' if r['met'] else 'MISSED'} |" for r in result["targets"]]
    slow = result["slow_connections"]
    legit_ = {"unloaded": slow["unloaded"]["requests"]} | {k: slow[k]["legit"]["requests"]
                                                           for k in ("spread", "one_address")}
    lines += ["", (f"Legitimate clients: {result['clients']} keep-alive clients from 127.0.0.1, one small /embed every "
                   f"~50 ms each ({legit_['unloaded']} requests unloaded, {legit_['spread']} with 500 connections "
                   f"held {result['hold']:g} s from 10 addresses, {legit_['one_address']} with 513 from one "
                   "address); the hostile connections come from a separate process.")]
    lines += ["", ("Hostile connections: a third idle, a third sending headers a byte a second, a third with a "
              "100 kB body a byte a second; the server's answers to them: "
              f"spread {slow['spread']['hostile_answers']}, one address {slow['one_address']['hostile_answers']} "
              "(429: over --max-connections-per-address, 408: --header-timeout / --body-timeout). /health during "
              f"each: {slow['spread']['health']}, {slow['one_address']['health']}."),
              "", f"2 MB requests (statuses): {result['memory']['statuses']}", ""]
    return "\n".join(lines)
