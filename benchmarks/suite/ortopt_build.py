"""The ``ortopt`` contender: onnxruntime's own transformer optimizer, run directly (what Optimum O2 / O4 run).

GPU machines here reach no package registry, so Optimum cannot be installed there; its O4 level is
``onnxruntime.transformers.optimizer`` plus fp16 conversion, which ships inside onnxruntime. This builds that
graph from the same checkpoint the other contenders use, the way the optimizer fuses best (shared FINDINGS):
a TorchScript export with eager attention (it fuses no SDPA or dynamo attention), ``model_type="bert"`` with
GELU approximation (Optimum O3/O4), then ``convert_float_to_float16(keep_io_types=True)`` for ``fp16``. The
graph has the interface Optimum's has (``logits`` over every token for fill-mask, ``last_hidden_state`` for
embed), so OptimumRunner drives it. ModernBERT has no model type in the optimizer: its graph is built all the
same and its fusion counts say what was fused (no Attention).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from polyglot_onnx.errors import BenchError, first_line

VARIANTS = ("fp32", "fp16")
OPSET = 17


def _wrapper(model: Any, task: str, token_types: bool) -> Any:
    import torch

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            kwargs = {"token_type_ids": token_type_ids} if token_types else {}
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            return out.logits if task == "fill-mask" else out.last_hidden_state

    return Graph().eval()


def export_torchscript(checkpoint: Path, task: str, path: Path) -> dict[str, int]:
    """TorchScript export with eager attention; returns the config numbers the optimizer needs."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

    config = AutoConfig.from_pretrained(str(checkpoint))
    auto = AutoModelForMaskedLM if task == "fill-mask" else AutoModel
    model = auto.from_pretrained(str(checkpoint), attn_implementation="eager").eval()
    token_types = "token_type_ids" in model.forward.__code__.co_varnames and getattr(config, "type_vocab_size", 0) > 0
    ids = torch.randint(5, 100, (2, 16))
    mask = torch.ones_like(ids)
    args: tuple[Any, ...] = (ids, mask, torch.zeros_like(ids)) if token_types else (ids, mask)
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if token_types else [])
    output = "logits" if task == "fill-mask" else "last_hidden_state"
    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, output]}
    with torch.no_grad():
        torch.onnx.export(_wrapper(model, task, token_types), args, str(path), dynamo=False, opset_version=OPSET,
                          input_names=names, output_names=[output], dynamic_axes=axes)
    return {"num_heads": int(config.num_attention_heads), "hidden_size": int(config.hidden_size)}


def build_ortopt(checkpoint: Path, out: Path, task: str, variant: str, use_gpu: bool) -> Path:
    """``out``/model.onnx (and summary.json): the optimizer's graph for ``task``; built once, by rename."""
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    if variant not in VARIANTS:
        raise BenchError(f"unknown ortopt variant {variant!r}: choose from {', '.join(VARIANTS)}")
    final = out / "model.onnx"
    if final.is_file():
        return final
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        raw = tmp / "torchscript.onnx"
        dims = export_torchscript(checkpoint, task, raw)
        options = FusionOptions("bert")
        options.enable_gelu_approximation = True  # Optimum O3 / O4
        optimized = optimize_model(str(raw), model_type="bert", num_heads=dims["num_heads"],
                                   hidden_size=dims["hidden_size"], optimization_options=options, use_gpu=use_gpu)
        fused = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
        if variant == "fp16":
            optimized.convert_float_to_float16(keep_io_types=True)
        raw.unlink()
        large = optimized.model.ByteSize() > 2**31 - 2**20
        onnx.save_model(optimized.model, str(tmp / "model.onnx"), save_as_external_data=large,
                        location="model.onnx_data" if large else None)
        summary = {"task": task, "variant": variant, "use_gpu": use_gpu, "opset": OPSET, "fused": fused}
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    except BenchError:
        raise
    except Exception as err:  # torch.onnx / the optimizer raise many types: the row records why
        raise BenchError(f"the ORT optimizer route failed for {task} {variant}: {first_line(err)}") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
