"""Banded local attention for ModernBERT's sliding-window layers, substituted during export only.

transformers runs a local layer as dense attention under a band mask: at 8,192 tokens that is a
[heads, 8192, 8192] score tensor per layer for a band 129 wide. Here the sequence is cut into blocks
of half the window; each block's queries attend to their own and the two neighbouring blocks'
keys under the exact band mask (|i - j| <= window / 2, transformers' bidirectional sliding window)
and the key padding mask. SDPA over [batch x blocks, heads, block, 3 x block] still exports as one
ai.onnx Attention per layer. Global layers run query-chunked (export/chunked.py) to bound their
memory; the PyTorch reference stays unpatched.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Iterator
from typing import Any

LOCAL = "sliding_attention"
GLOBAL = "full_attention"


def band_mask(block: int, half_window: int) -> Any:
    """[block, 3 x block] bool: query i of a block against keys of blocks k-1, k, k+1."""
    import torch

    query = torch.arange(block).unsqueeze(1)
    key = torch.arange(3 * block).unsqueeze(0) - block  # key position relative to the block start
    return (key - query).abs() <= half_window


def _neighbour_blocks(x: Any, blocks: int, dim: int) -> Any:
    """[batch, blocks + 2, ...] -> [batch, blocks, ...]: each block joined with both neighbours along ``dim``."""
    import torch

    return torch.cat([x[:, :blocks], x[:, 1 : blocks + 1], x[:, 2 : blocks + 2]], dim=dim)


def banded_sdpa(query: Any, key: Any, value: Any, key_valid: Any, half_window: int, scale: float) -> Any:
    """Exact sliding-window attention over the band only; [b, heads, L, d] in, [b, L, heads, d] out.

    ``key_valid`` is the [b, L] padding mask. A query also always sees itself, so padded queries
    (whose outputs nobody reads) never have an empty row: an all-masked softmax gives NaN.
    """
    import torch
    import torch.nn.functional as F

    batch, heads, length, dim = query.shape
    block = half_window
    blocks = (length + block - 1) // block
    tail = blocks * block - length
    # [b, heads, L, d] -> [b, blocks, heads, block, d] -> [b * blocks, heads, block, d]
    q = F.pad(query, (0, 0, 0, tail)).reshape(batch, heads, blocks, block, dim).transpose(1, 2)
    q = q.reshape(batch * blocks, heads, block, dim)

    def windows(x: Any) -> Any:
        x = F.pad(x, (0, 0, block, tail + block)).reshape(batch, heads, blocks + 2, block, dim).transpose(1, 2)
        return _neighbour_blocks(x, blocks, 3).reshape(batch * blocks, heads, 3 * block, dim)

    valid = F.pad(key_valid.to(torch.bool), (block, tail + block), value=False).reshape(batch, blocks + 2, block)
    valid = _neighbour_blocks(valid, blocks, 2)  # [b, blocks, 3 x block]
    band = band_mask(block, half_window).to(query.device)
    itself = band_mask(block, 0).to(query.device)
    mask = (band & valid.unsqueeze(2)) | itself  # [b, blocks, block, 3 x block]
    mask = mask.reshape(batch * blocks, 1, block, 3 * block)
    out = F.scaled_dot_product_attention(q, windows(key), windows(value), attn_mask=mask, scale=scale)
    # [b * blocks, heads, block, d] -> [b, blocks * block, heads, d], cut back to L
    out = out.reshape(batch, blocks, heads, block, dim).transpose(2, 3).reshape(batch, blocks * block, heads, dim)
    return out[:, :length]


def attention_forward(attend: Callable[[Any, Any, Any, Any, Any], Any]) -> Callable[..., tuple[Any, None]]:
    """ModernBertAttention.forward with its attention call replaced by ``attend(self, q, k, v, mask)``.

    ``attention_mask`` arrives as the [b, L] padding mask (see :func:`mask_mapping`); ``attend``
    returns [b, L, heads, d]. Used for the banded local and the query-chunked global layers.
    """

    def forward(self: Any, hidden_states: Any, position_embeddings: Any = None, attention_mask: Any = None,
                **kwargs: Any) -> tuple[Any, None]:
        from transformers.models.modernbert.modeling_modernbert import apply_rotary_pos_emb

        input_shape = hidden_states.shape[:-1]
        qkv = self.Wqkv(hidden_states).view(*input_shape, 3, -1, self.head_dim)
        query, key, value = (t.transpose(1, 2) for t in qkv.unbind(dim=-3))
        cos, sin = position_embeddings
        query, key = apply_rotary_pos_emb(query, key, cos, sin, unsqueeze_dim=1)
        out = attend(self, query, key, value, attention_mask)
        # the width as a number, not -1: a -1 makes the exporter derive it from ``out``'s traced shape, and
        # torch 2.11 then reads that shape inside the route, which export/dispatch.py moves into an If branch
        width = self.config.num_attention_heads * self.head_dim
        return self.out_drop(self.Wo(out.reshape(*input_shape, width))), None

    return forward


ROUTE = "route"  # child module each patched attention calls: its name scope marks the nodes dispatch.py may branch


def _make_route(attend: Callable[[Any, Any, Any, Any, Any], Any], attn: Any) -> Any:
    """A child module of ``attn`` running ``attend``: the exporter records '<attn>.route' on every node it
    makes, so the graph pass in export/dispatch.py can find each layer's banded / chunked nodes exactly."""
    import torch

    class Route(torch.nn.Module):
        def forward(self, query: Any, key: Any, value: Any, mask: Any) -> Any:
            return attend(attn, query, key, value, mask)

    return Route()


def _route_forward(self: Any, query: Any, key: Any, value: Any, mask: Any) -> Any:
    return getattr(self, ROUTE)(query, key, value, mask)


_routed_forward = attention_forward(_route_forward)


def _banded_attend(self: Any, q: Any, k: Any, v: Any, mask: Any) -> Any:
    return banded_sdpa(q, k, v, mask, self.config.sliding_window, self.head_dim**-0.5)


def local_layers(encoder: Any) -> list[int]:
    return [i for i, kind in enumerate(encoder.config.layer_types) if kind == LOCAL]


def global_layers(encoder: Any) -> list[int]:
    return [i for i, kind in enumerate(encoder.config.layer_types) if kind == GLOBAL]


def mask_mapping(encoder: Any, input_ids: Any, attention_mask: Any) -> dict[str, Any]:
    """Both kinds of layer get the [b, L] padding mask: local layers build their band from it, global
    layers (query-chunked, export/chunked.py) their [b, 1, 1, L] key mask; no [b, 1, L, L] mask is built."""
    return {GLOBAL: attention_mask, LOCAL: attention_mask}


@contextlib.contextmanager
def banded_export(module: Any) -> Iterator[list[int]]:
    """Swap each local layer's attention forward for the banded one, and each global layer's for the
    query-chunked one, on the package module; restore on exit.

    Only the traced graph is changed: validation afterwards compares it with transformers' own forward.
    """
    from polyglot_onnx.export.chunked import chunked_attend

    encoder = module.encoder
    routes = [(i, _banded_attend) for i in local_layers(encoder)] + [(i, chunked_attend) for i in global_layers(encoder)]
    patched = []
    try:
        module.banded = True
        for i, attend in routes:
            attn = encoder.layers[i].attn
            setattr(attn, ROUTE, _make_route(attend, attn))
            attn.forward = types.MethodType(_routed_forward, attn)
            patched.append(attn)
        yield local_layers(encoder)
    finally:
        module.banded = False
        for attn in patched:
            del attn.forward
            delattr(attn, ROUTE)
