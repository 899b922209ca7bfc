"""Query-chunked attention for ModernBERT's global layers, substituted during export only.

onnxruntime's CPU ``ai.onnx::Attention`` kernel materialises the whole probability matrix
[batch, heads, L, L] in fp32: at 8,192 tokens that is 3.2 GB per global layer of mmBERT-base, and
the peak of the whole call. Attention rows are independent, so the queries are cut into a fixed
number of chunks (the sequence padded to a multiple of it), each chunk attends to every key under the
[b, 1, chunk, L] key padding mask, and the outputs are joined: the same numbers, a fraction of the peak
buffer, since onnxruntime runs the chunks' Attention nodes one after another and reuses the buffer.
No [b, 1, L, L] mask is built either. The chunk count is static (torch.export cannot loop over a
dynamic length), so a short input pays a few more, smaller Attention calls.
"""

from __future__ import annotations

from typing import Any

GLOBAL_QUERY_CHUNKS = 8  # peak probability buffer / 8; measured cost at short lengths in benchmarks/README.md


def chunked_sdpa(query: Any, key: Any, value: Any, key_valid: Any, chunks: int, scale: float) -> Any:
    """Full attention computed ``chunks`` query blocks at a time; [b, heads, L, d] in, [b, L, heads, d] out."""
    import torch
    import torch.nn.functional as F

    batch, heads, length, dim = query.shape
    size = (length + chunks - 1) // chunks
    tail = size * chunks - length
    q = F.pad(query, (0, 0, 0, tail)).reshape(batch, heads, chunks, size, dim)
    # [b, 1, size, L]: padded keys only (onnxruntime wants the mask's query dimension spelled out)
    mask = key_valid.to(torch.bool)[:, None, None, :].expand(batch, 1, size, length)
    parts = [F.scaled_dot_product_attention(q[:, :, i], key, value, attn_mask=mask, scale=scale)
             for i in range(chunks)]
    out = torch.stack(parts, dim=2).reshape(batch, heads, chunks * size, dim)[:, :, :length]
    return out.transpose(1, 2)


def chunked_attend(self: Any, query: Any, key: Any, value: Any, mask: Any) -> Any:
    """A global layer's attention call, query-chunked (export/banded.py patches it in)."""
    return chunked_sdpa(query, key, value, mask, GLOBAL_QUERY_CHUNKS, self.head_dim**-0.5)
