"""Where a variant diverges: each encoder layer's hidden state against the reference's.

Layer outputs are found in the fp32 graph from the exporter's module scopes and exposed as extra
outputs of both graphs (names survive quantization and fp16 conversion). A quantized variant is
compared with the fp32 graph, which export validated against PyTorch far below any quantization
noise; the fp32 graph itself, checked with ``--reference torch``, is compared with PyTorch's
``hidden_states``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from polyglot_onnx import manifest as mf
from polyglot_onnx.graph_feeds import graph_feeds
from polyglot_onnx.quantize.feeds import cpu_session
from polyglot_onnx.runtime.text import length_sorted_batches, pad_ids

SQNR_FLOOR_DB = 20.0  # a layer output below this signal-to-noise ratio has diverged
MAX_TEXTS = 64  # an even sample of the corpus is plenty to rank layers


class LayerSource(Protocol):
    label: str

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> list[np.ndarray]: ...


class GraphLayers:
    """A package graph with its layer outputs exposed as float32 outputs."""

    def __init__(self, root: Path, manifest: mf.Manifest, variant: str, names: list[str], threads: int | None) -> None:
        from polyglot_onnx.quantize.graphs import expose, load_model

        model = load_model(root / manifest.variants[variant].graph_file)
        self.probes = expose(model, names)
        self.session = cpu_session(model, threads)
        self.inputs = manifest.inputs
        self.label = f"{variant} graph"

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
        return list(self.session.run(self.probes, graph_feeds(self.inputs, ids, mask)))


class TorchLayers:
    """PyTorch ``hidden_states`` after each layer; the last one is the final hidden state."""

    label = "PyTorch"

    def __init__(self, module: Any, token_types: bool) -> None:
        self.module = module
        self.token_types = token_types

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
        import torch

        tensor = torch.from_numpy(ids)
        kwargs = {"token_type_ids": torch.zeros_like(tensor)} if self.token_types else {}
        positions = torch.arange(ids.shape[1]).unsqueeze(0).expand(ids.shape[0], -1)
        with torch.no_grad():
            out = self.module.encoder(
                input_ids=tensor,
                attention_mask=torch.from_numpy(mask),
                position_ids=positions,
                output_hidden_states=True,
                **kwargs,
            )
        states = [h.numpy() for h in out.hidden_states[1:-1]]
        return states + [out.last_hidden_state.numpy()]


def _sources(
    root: Path, manifest: mf.Manifest, variant: str, threads: int | None, torch_module: Any | None
) -> tuple[LayerSource, LayerSource]:
    from polyglot_onnx.quantize.graphs import layer_outputs, load_model

    names = layer_outputs(load_model(root / manifest.variants["fp32"].graph_file))
    if variant == "fp32":
        # the last layer's comparable state is the final hidden state (after any final norm)
        fp32 = GraphLayers(root, manifest, "fp32", names[:-1] + [mf.TOKEN_EMBEDDINGS], threads)
        return TorchLayers(torch_module.module, torch_module.token_types), fp32
    return GraphLayers(root, manifest, "fp32", names, threads), GraphLayers(root, manifest, variant, names, threads)


def localize(
    root: Path,
    manifest: mf.Manifest,
    variant: str,
    texts: list[list[int]],
    batch_size: int,
    sqnr_floor: float = SQNR_FLOOR_DB,
    threads: int | None = None,
    torch_module: Any | None = None,
) -> dict[str, Any]:
    # torch_module: the drift checker's TorchRunner (module + whether it takes token_type_ids)
    """Per-layer SQNR (dB) and mean token cosine; the first layer below ``sqnr_floor``."""
    if variant == "fp32" and torch_module is None:
        return {"layers": [], "diverges_at": None, "note": "fp32 is the layer reference: use --reference torch"}
    reference, candidate = _sources(root, manifest, variant, threads, torch_module)
    sample = list(range(0, len(texts), max(1, len(texts) // MAX_TEXTS)))[:MAX_TEXTS]
    signal: np.ndarray | None = None
    noise = cos_sum = signal
    tokens = 0
    for batch in length_sorted_batches([len(texts[i]) for i in sample], batch_size):
        ids, mask = pad_ids([texts[sample[i]] for i in batch], manifest.tokenizer.pad_token_id)
        ref, var = reference(ids, mask), candidate(ids, mask)
        if signal is None:
            signal, noise, cos_sum = (np.zeros(len(ref)) for _ in range(3))
        valid = mask.astype(bool)
        for k, (r, v) in enumerate(zip(ref, var)):
            a = r[valid].astype(np.float64)
            b = np.nan_to_num(v[valid].astype(np.float64), nan=1e30, posinf=1e30, neginf=-1e30)
            signal[k] += float((a**2).sum())
            noise[k] += float(((a - b) ** 2).sum())
            norms = np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)
            cos_sum[k] += float(((a * b).sum(-1) / norms).sum())
        tokens += int(valid.sum())
    assert signal is not None and noise is not None and cos_sum is not None
    layers = [
        {
            "layer": k,
            "sqnr_db": float(10 * np.log10(signal[k] / noise[k])) if noise[k] > 0 else float("inf"),
            "cosine": float(cos_sum[k] / max(tokens, 1)),
        }
        for k in range(len(signal))
    ]
    below = [entry["layer"] for entry in layers if entry["sqnr_db"] < sqnr_floor]
    finite = [min(entry["sqnr_db"], 1e3) for entry in layers]
    drops = [1e3 - finite[0]] + [finite[k - 1] - finite[k] for k in range(1, len(finite))]
    return {
        "reference": reference.label,
        "sqnr_floor_db": sqnr_floor,
        "layers": layers,
        "diverges_at": below[0] if below else None,
        "largest_drop_at": int(np.argmax(drops)) if layers else None,
    }
