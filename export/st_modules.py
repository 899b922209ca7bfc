"""A sentence-transformers checkpoint's modules after the Transformer, rebuilt as one torch module.

``modules.json`` lists Pooling -> Dense* -> Normalize; each is read from its folder (config.json and
safetensors / pytorch_model.bin weights) and exported into the graph's ``sentence_embedding``, so a
LaBSE package gives what ``SentenceTransformer(dir).encode`` gives, Dense layer included. The pooling
arithmetic copies sentence_transformers' Pooling (right padding, the one layout the runtime feeds).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyglot_onnx.errors import ExportError
from polyglot_onnx.manifest import SIMILARITY_FUNCTIONS

# legacy boolean keys -> pooling mode, in sentence-transformers' concatenation order
LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
POOLING_MODES = tuple(LEGACY_POOLING_KEYS.values())


@dataclass(frozen=True)
class DenseLayer:
    in_features: int
    out_features: int
    activation: str  # torch.nn class name: Tanh, Identity, ...
    weights: dict[str, Any]  # linear.weight, linear.bias (torch tensors)


@dataclass(frozen=True)
class SentencePipeline:
    """What follows the Transformer in modules.json, as configured."""

    pooling: tuple[str, ...]
    dense: tuple[DenseLayer, ...] = ()
    normalize: bool = False
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity_fn_name: str | None = None  # one of manifest.SIMILARITY_FUNCTIONS, else not recorded

    @property
    def trivial(self) -> str | None:
        """'mean' or 'cls' when the graph's existing outputs already are this pipeline; else None.

        A trailing Normalize alone keeps the graph as it is (all-MiniLM-L6-v2's mean + Normalize): the
        runtime normalizes such packages' default pooling itself, with or without ``normalize``.
        """
        if not self.dense and self.pooling in (("mean",), ("cls",)):
            return self.pooling[0]
        return None

    def describe(self) -> list[str]:
        steps = [f"Pooling({'+'.join(self.pooling)})"]
        steps += [f"Dense({d.in_features}->{d.out_features}, {d.activation.lower()})" for d in self.dense]
        return steps + (["Normalize"] if self.normalize else [])

    def output_dim(self, hidden: int) -> int:
        return self.dense[-1].out_features if self.dense else hidden * len(self.pooling)


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ExportError(f"cannot read {path} ({type(err).__name__}): re-save the sentence-transformers model") from err


def _pooling_modes(cfg: dict[str, Any], where: Path) -> tuple[str, ...]:
    if "pooling_mode" in cfg:
        mode = cfg["pooling_mode"]
        modes = (mode,) if isinstance(mode, str) else tuple(mode)
    else:
        modes = tuple(m for key, m in LEGACY_POOLING_KEYS.items() if cfg.get(key)) or ("mean",)
    unknown = [m for m in modes if m not in POOLING_MODES]
    if unknown:
        raise ExportError(f"{where}: unknown pooling mode {unknown[0]!r}: expected one of {', '.join(POOLING_MODES)}")
    if cfg.get("include_prompt", True) is False:
        raise ExportError(
            f"{where}: include_prompt=false (prompt tokens left out of pooling) is not supported: "
            "polyglot-onnx pools prompt tokens, as include_prompt=true models do"
        )
    return modes


def _dense(folder: Path) -> DenseLayer:
    import torch

    cfg = _json(folder / "config.json")
    if cfg.get("use_residual"):
        raise ExportError(f"{folder}: Dense with use_residual is not supported: export without the residual")
    path = str(cfg.get("activation_function", "torch.nn.modules.activation.Tanh"))
    name = path.rsplit(".", 1)[-1]
    cls = getattr(torch.nn, name, None)
    if not path.startswith("torch.") or not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ExportError(f"{folder}: activation {path!r} is not a torch.nn module: only torch.nn activations export")
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        weights = load_file(str(folder / "model.safetensors"))
    elif (folder / "pytorch_model.bin").is_file():
        weights = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise ExportError(f"{folder} has no model.safetensors or pytorch_model.bin: re-save the model")
    if "linear.weight" not in weights:
        raise ExportError(f"{folder}: weights lack linear.weight: not a sentence-transformers Dense module")
    return DenseLayer(int(cfg["in_features"]), int(cfg["out_features"]), name, weights)


def read_pipeline(directory: Path) -> SentencePipeline | None:
    """modules.json -> SentencePipeline; None for a plain Hugging Face checkpoint."""
    modules_file = directory / "modules.json"
    if not modules_file.is_file():
        return None
    pooling: tuple[str, ...] | None = None
    dense: list[DenseLayer] = []
    normalize = False
    for module in _json(modules_file):
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        folder = directory / module.get("path", "")
        if kind == "Transformer":
            continue
        if kind == "Pooling":
            pooling = _pooling_modes(_json(folder / "config.json"), folder)
        elif kind == "Dense":
            dense.append(_dense(folder))
        elif kind == "Normalize":
            normalize = True
        else:
            raise ExportError(
                f"{modules_file}: module {kind!r} is not supported: polyglot-onnx exports Transformer, Pooling, "
                "Dense and Normalize"
            )
    if pooling is None:
        return None
    st_cfg = directory / "config_sentence_transformers.json"
    prompts: dict[str, str] = {}
    default_prompt: str | None = None
    similarity: str | None = None
    if st_cfg.is_file():
        data = _json(st_cfg)
        prompts = {str(k): str(v) for k, v in (data.get("prompts") or {}).items()}
        default_prompt = data.get("default_prompt_name") or None
        # as SentenceTransformer loads it: a name it does not support (e.g. a multi-vector 'maxsim') is not kept
        named = data.get("similarity_fn_name")
        similarity = named if named in SIMILARITY_FUNCTIONS else None
    return SentencePipeline(pooling, tuple(dense), normalize, prompts, default_prompt, similarity)


def build_head(pipeline: SentencePipeline) -> Any:
    """torch module: (token embeddings, attention mask) -> the pipeline's sentence embedding."""
    import torch

    class Dense(torch.nn.Module):
        def __init__(self, layer: DenseLayer) -> None:
            super().__init__()
            bias = "linear.bias" in layer.weights
            self.linear = torch.nn.Linear(layer.in_features, layer.out_features, bias=bias)
            self.linear.load_state_dict({k.split(".", 1)[1]: v for k, v in layer.weights.items() if k.startswith("linear.")})
            self.activation = getattr(torch.nn, layer.activation)()

        def forward(self, x: Any) -> Any:
            return self.activation(self.linear(x))

    class SentenceHead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.modes = pipeline.pooling
            self.dense = torch.nn.ModuleList(Dense(d) for d in pipeline.dense)
            self.normalize = pipeline.normalize

        def forward(self, hidden: Any, attention_mask: Any) -> Any:
            vectors = [_pool(mode, hidden, attention_mask) for mode in self.modes]
            x = vectors[0] if len(vectors) == 1 else torch.cat(vectors, dim=-1)
            for layer in self.dense:
                x = layer(x)
            return torch.nn.functional.normalize(x, p=2, dim=1) if self.normalize else x

    return SentenceHead().eval()


def _pool(mode: str, hidden: Any, attention_mask: Any) -> Any:
    """sentence_transformers Pooling._forward_padded for right-padded batches, mode by mode."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return hidden.masked_fill(mask == 0, float("-inf")).max(dim=1).values
    if mode in ("mean", "mean_sqrt_len_tokens"):
        total = (hidden * mask).sum(dim=1)
        count = torch.clamp(mask.sum(dim=1), min=1e-9)
        return total / (count if mode == "mean" else torch.sqrt(count))
    if mode == "weightedmean":
        weights = torch.arange(1, hidden.shape[1] + 1, dtype=hidden.dtype, device=hidden.device).view(1, -1, 1)
        weighted = mask * weights
        return (hidden * weighted).sum(dim=1) / torch.clamp(weighted.sum(dim=1), min=1e-9)
    # lasttoken: the last attended position of each row
    last = attention_mask.sum(dim=1) - 1
    index = last.clamp(min=0).view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
    return torch.gather(hidden * mask, 1, index).squeeze(1)
