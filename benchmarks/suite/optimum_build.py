"""Build Hugging Face Optimum's ONNX variants of one checkpoint (runs inside the isolated Optimum venv).

Standalone on purpose: it imports only optimum / transformers 4.57 / torch / onnx / onnxruntime,
never polyglot_onnx (whose transformers 5 cannot live in the same environment). The suite runs it
through ``optimum_route.build_optimum``; by hand:

    python optimum_build.py --checkpoint CKPT --out OUT --task fill-mask --levels O2,int8[,O4]

Steps, each the stock Optimum recipe:

1. ``fp32``: ``main_export`` -- what ``optimum-cli export onnx --model CKPT --task TASK OUT`` runs.
2. ``O2``: ``ORTOptimizer`` + ``AutoOptimizationConfig.O2()`` on the export.
3. ``int8``: ``ORTQuantizer`` + ``AutoQuantizationConfig.avx2(is_static=False, per_channel=False)``
   on the O2 model (on the fp32 export when O2 could not be built).
4. ``O4`` (only when asked): ``AutoOptimizationConfig.O4()`` -- fusions + fp16, Optimum's GPU level.

A variant Optimum refuses is recorded (``files[variant] = null`` and a line in ``notes``), not
fatal; a failed or unloadable fp32 export is. One ``[optimum-build]`` line per step goes to stderr,
and OUT/summary.json gets files, versions, graph inputs/outputs, op counts and seconds per step.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

PREFIX = "[optimum-build]"
TASKS = ("fill-mask", "feature-extraction")
LEVELS = ("O2", "int8", "O4")
VERSIONED = ("optimum-onnx", "optimum", "transformers", "tokenizers", "torch", "onnx", "onnxruntime")
# Copied config files rewritten for transformers 4.57; everything else (weights, tokenizer.json) is linked.
REWRITTEN = ("config.json", "tokenizer_config.json")


class BuildError(Exception):
    """A failure that makes the whole build worthless (the fp32 export): exit non-zero."""


def progress(message: str) -> None:
    print(f"{PREFIX} {message}", file=sys.stderr, flush=True)


def release_memory() -> None:
    """Hand freed heap back to the OS between steps: each step loads the whole graph (and the
    quantizer a few copies), and glibc keeps freed arenas, so without this the peaks add up."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:300]


# --- transformers 5 checkpoint -> something transformers 4.57 reads identically -----------------


def _modernbert_config(cfg: dict[str, Any], notes: list[str]) -> None:
    """transformers 5 moved ModernBERT's RoPE bases into ``rope_parameters`` and the local/global
    layout into ``layer_types``; 4.57 reads ``global_rope_theta`` / ``local_rope_theta`` and puts
    global attention on every ``global_attn_every_n_layers``-th layer. Without the translation 4.57
    would silently use its default bases (wrong for mmBERT, whose local base is 160000)."""
    rope = cfg.get("rope_parameters")
    if isinstance(rope, dict):
        full = rope.get("full_attention", {}).get("rope_theta")
        local = rope.get("sliding_attention", {}).get("rope_theta")
        if full is not None:
            cfg["global_rope_theta"] = float(full)
        if local is not None:
            cfg["local_rope_theta"] = float(local)
        notes.append(
            f"config: rope_parameters -> global_rope_theta={full}, local_rope_theta={local} for transformers 4.57"
        )
    layer_types = cfg.get("layer_types")
    if layer_types:
        every = int(cfg.get("global_attn_every_n_layers", 3))
        implied = ["full_attention" if i % every == 0 else "sliding_attention" for i in range(len(layer_types))]
        if list(layer_types) != implied:
            raise BuildError(
                f"layer_types {layer_types} cannot be expressed as global_attn_every_n_layers={every} in transformers 4.57"
            )


def _tokenizer_config(cfg: dict[str, Any], notes: list[str]) -> None:
    """transformers 5 saves ``tokenizer_class: TokenizersBackend`` (and ``backend``), which 4.57's
    AutoTokenizer does not know; the tokenizer itself lives in tokenizer.json, so the generic fast
    class loads it unchanged."""
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    name = cfg.get("tokenizer_class")
    if name and tokenizer_class_from_name(name) is None:
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        notes.append(f"tokenizer_config: tokenizer_class {name} -> PreTrainedTokenizerFast for transformers 4.57")
    cfg.pop("backend", None)


def stage_checkpoint(src: Path, dst: Path, notes: list[str]) -> None:
    """A view of ``src`` that transformers 4.57 reads as transformers 5 meant it (weights linked, not copied)."""
    dst.mkdir(parents=True)
    for item in src.iterdir():
        if item.name not in REWRITTEN:
            os.symlink(item.resolve(), dst / item.name)
    cfg = json.loads((src / "config.json").read_text(encoding="utf-8"))
    if cfg.get("model_type") == "modernbert":
        _modernbert_config(cfg, notes)
    (dst / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    tok_path = src / "tokenizer_config.json"
    if tok_path.is_file():
        tok = json.loads(tok_path.read_text(encoding="utf-8"))
        _tokenizer_config(tok, notes)
        (dst / "tokenizer_config.json").write_text(json.dumps(tok, indent=2), encoding="utf-8")


def check_weights(staged: Path, task: str) -> None:
    """Fail when 4.57 would randomly initialise weights the checkpoint has under other names:
    main_export only logs that, and the export would then validate against a wrong model."""
    import transformers

    auto = transformers.AutoModelForMaskedLM if task == "fill-mask" else transformers.AutoModel
    model, info = auto.from_pretrained(str(staged), output_loading_info=True)
    # The pooler is not part of a *ForMaskedLM checkpoint and not an output Optimum exports.
    missing = [key for key in info["missing_keys"] if ".pooler." not in f".{key}"]
    del model
    gc.collect()
    if missing:
        raise BuildError(
            f"transformers {transformers.__version__} finds no weights for {len(missing)} tensors "
            f"({', '.join(missing[:3])}...) in the checkpoint"
        )


# --- graph facts for the summary -------------------------------------------------------------------


def graph_facts(path: Path) -> dict[str, Any]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    init = {t.name for t in model.graph.initializer}
    ops = Counter(
        f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type for n in model.graph.node
    )
    return {
        "inputs": [i.name for i in model.graph.input if i.name not in init],
        "outputs": [o.name for o in model.graph.output],
        "bytes": sum(p.stat().st_size for p in path.parent.glob(path.name + "*")),
        "ops": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


def loads_on_cpu(path: Path) -> str | None:
    """None when onnxruntime's CPU provider can create a session for the file, else why not."""
    import onnxruntime as ort

    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - any ORT failure is a fact to record
        return first_line(err)
    return None


def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for name in VERSIONED:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


# --- the steps ------------------------------------------------------------------------------------


def export_fp32(staged: Path, out: Path, task: str) -> Path:
    from optimum.exporters.onnx import main_export

    # Same call optimum-cli makes for `export onnx --model DIR --task TASK OUT` (validation on).
    main_export(model_name_or_path=str(staged), output=out, task=task, device="cpu", library_name="transformers")
    path = out / "model.onnx"
    if not path.is_file():
        raise BuildError(f"main_export wrote no model.onnx into {out}")
    return path


def optimize(source: Path, out: Path, level: str) -> Path:
    from optimum.onnxruntime import AutoOptimizationConfig, ORTOptimizer

    config = AutoOptimizationConfig.O2() if level == "O2" else AutoOptimizationConfig.O4()
    # ORTOptimizer deletes the *source* model's external data file (model.onnx_data, > 2 GB models)
    # after optimizing from a directory: keep a hard link and put it back so fp32 stays usable.
    data = source.with_name(source.name + "_data")
    keep = data.with_name(data.name + ".keep")
    if data.is_file():
        os.link(data, keep)
    try:
        ORTOptimizer.from_pretrained(source.parent, file_names=[source.name]).optimize(
            optimization_config=config, save_dir=out
        )
    finally:
        if keep.exists():
            if data.exists():
                keep.unlink()
            else:
                os.replace(keep, data)
    return out / f"{source.stem}_optimized.onnx"


MISSING_TYPE = "Unable to find data type"


def quantize(source: Path, out: Path, notes: list[str]) -> Path:
    """Optimum's dynamic avx2 recipe; retried with ``DefaultTensorType=FLOAT`` when onnxruntime asks for it.

    onnxruntime >= 1.2x's quantizer needs an element type for every MatMul output, and onnx shape
    inference gives none for outputs of com.microsoft ops (SkipLayerNormalization, Attention), so
    the stock O2 -> int8 recipe raises "Unable to find data type". Optimum has no way to pass the
    ``DefaultTensorType`` extra option that onnxruntime's message recommends; the retry injects it
    (FLOAT: the graph is fp32, so it is the type inference would have found). Same nodes quantized.
    """
    import onnx
    import optimum.onnxruntime.quantization as oq
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    qconfig = AutoQuantizationConfig.avx2(is_static=False, per_channel=False)
    # A source stored with external data (> 2 GB) keeps that format for the output.
    big = sum(part.stat().st_size for part in source.parent.glob(source.name + "*")) > 1_900_000_000

    def run() -> None:
        ORTQuantizer.from_pretrained(source.parent, file_name=source.name).quantize(
            save_dir=out, quantization_config=qconfig, use_external_data_format=big
        )

    try:
        run()
        return out / f"{source.stem}_quantized.onnx"
    except RuntimeError as err:
        if MISSING_TYPE not in str(err):
            raise
    release_memory()  # outside the except block: the traceback no longer pins the failed attempt's graph
    stock = oq.ONNXQuantizer

    class DefaultFloatQuantizer(stock):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            extra = dict(kwargs.get("extra_options") or {})
            extra["DefaultTensorType"] = onnx.TensorProto.FLOAT
            super().__init__(*args, **{**kwargs, "extra_options": extra})

    oq.ONNXQuantizer = DefaultFloatQuantizer
    try:
        run()
    finally:
        oq.ONNXQuantizer = stock
    notes.append(
        f"int8: stock ORTQuantizer raised '{MISSING_TYPE}' on {source.parent.name} (no type for com.microsoft "
        "op outputs in onnxruntime's quantizer); re-run with extra_options DefaultTensorType=FLOAT"
    )
    return out / f"{source.stem}_quantized.onnx"


def build(checkpoint: Path, out: Path, task: str, levels: list[str]) -> dict[str, Any]:
    notes: list[str] = []
    seconds: dict[str, float] = {}
    files: dict[str, Path | None] = {"fp32": None}
    for level in LEVELS:
        if level in levels:
            files[level] = None

    def timed(name: str, fn: Any, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            seconds[name] = round(time.perf_counter() - start, 2)
            release_memory()

    with tempfile.TemporaryDirectory(prefix="optimum-stage-") as tmp:
        staged = Path(tmp) / checkpoint.name
        stage_checkpoint(checkpoint, staged, notes)
        progress(f"checking that transformers 4.57 loads every weight of {checkpoint.name}")
        timed("load_check", check_weights, staged, task)
        progress(f"fp32: optimum export ({task})")
        fp32 = timed("fp32", export_fp32, staged, out / "fp32", task)
    problem = loads_on_cpu(fp32)
    if problem:
        raise BuildError(f"the fp32 export does not load in onnxruntime: {problem}")
    files["fp32"] = fp32
    progress(f"fp32: {fp32.relative_to(out)} in {seconds['fp32']:.1f} s")

    if "O2" in levels:
        progress("O2: ORTOptimizer AutoOptimizationConfig.O2()")
        try:
            files["O2"] = timed("O2", optimize, fp32, out / "O2", "O2")
        except Exception as err:  # noqa: BLE001 - an unsupported level is a result, not a crash
            notes.append(f"O2 not built: ORTOptimizer refused ({type(err).__name__}: {first_line(err)})")
            progress(notes[-1])
    if "int8" in levels:
        source = files.get("O2") or fp32
        progress(f"int8: ORTQuantizer avx2 dynamic on {source.parent.name}")
        if source is fp32 and "O2" in levels:
            notes.append("int8 quantizes the fp32 export because O2 was not built")
        try:
            files["int8"] = timed("int8", quantize, source, out / "int8", notes)
        except Exception as err:  # noqa: BLE001
            notes.append(f"int8 not built: ORTQuantizer refused ({type(err).__name__}: {first_line(err)})")
            progress(notes[-1])
    if "O4" in levels:
        progress("O4: ORTOptimizer AutoOptimizationConfig.O4() (fp16, GPU fusions)")
        try:
            files["O4"] = timed("O4", optimize, fp32, out / "O4", "O4")
        except Exception as err:  # noqa: BLE001
            notes.append(f"O4 not built: ({type(err).__name__}: {first_line(err)})")
            progress(notes[-1])

    graphs: dict[str, Any] = {}
    for name, path in files.items():
        if path is None:
            continue
        if not path.is_file():
            notes.append(f"{name}: Optimum reported success but wrote no {path.name}")
            files[name] = None
            continue
        graphs[name] = graph_facts(path)
        graphs[name]["cpu_load_error"] = loads_on_cpu(path) if name != "fp32" else None
        if graphs[name]["cpu_load_error"]:
            notes.append(f"{name} does not load on onnxruntime's CPU provider: {graphs[name]['cpu_load_error']}")
    return {
        "checkpoint": str(checkpoint),
        "task": task,
        "levels": levels,
        "files": {name: (str(path.relative_to(out)) if path else None) for name, path in files.items()},
        "graphs": graphs,
        "seconds": seconds,
        "versions": versions(),
        "notes": notes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="saved model directory (config.json, weights)")
    parser.add_argument("--out", type=Path, required=True, help="output directory (created)")
    parser.add_argument("--task", choices=TASKS, required=True)
    parser.add_argument("--levels", default="O2,int8", help="comma list of O2, int8, O4 (fp32 is always built)")
    args = parser.parse_args(argv)
    levels = [level for level in args.levels.split(",") if level]
    unknown = sorted(set(levels) - set(LEVELS))
    if unknown:
        parser.error(f"unknown level(s) {', '.join(unknown)}")
    start = time.perf_counter()
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        summary = build(args.checkpoint.resolve(), args.out.resolve(), args.task, levels)
    except Exception as err:  # noqa: BLE001 - one readable line for the caller, traceback above it
        traceback.print_exc()
        print(f"{PREFIX} error: {type(err).__name__}: {first_line(err)}", file=sys.stderr, flush=True)
        return 1
    summary["seconds"]["total"] = round(time.perf_counter() - start, 2)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    built = ", ".join(name for name, rel in summary["files"].items() if rel)
    progress(f"done in {summary['seconds']['total']:.1f} s: {built}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
