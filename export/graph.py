"""The exported module: one graph, one copy of the weights, both interfaces.

Outputs are the token embeddings, the masked-mean and CLS sentence embeddings, and masked-LM
logits only at ``mask_positions`` (flat indices into batch x sequence). The [batch, seq, vocab]
logits tensor never exists: an empty ``mask_positions`` gives a zero-row head, so embedding calls
pay nothing for it (onnxruntime runs every node whatever outputs are requested).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

from polyglot_onnx import manifest as mf
from polyglot_onnx.export.loading import Checkpoint

OPSET = 23  # first opset with ai.onnx Attention and RotaryEmbedding


def graph_io(has_mlm_head: bool) -> tuple[list[str], list[str]]:
    inputs = [mf.INPUT_IDS, mf.ATTENTION_MASK] + ([mf.MASK_POSITIONS] if has_mlm_head else [])
    outputs = [mf.TOKEN_EMBEDDINGS, mf.SENTENCE_EMBEDDING, mf.CLS_EMBEDDING]
    return inputs, outputs + ([mf.MASK_LOGITS] if has_mlm_head else [])


def package_io(has_mlm_head: bool) -> tuple[list[str], list[str]]:
    """The graph's inputs and outputs once the passes ran: the traced ones, and the top k of export/topk.py."""
    inputs, outputs = graph_io(has_mlm_head)
    if not has_mlm_head:
        return inputs, outputs
    return inputs + [mf.MASK_TOP_K], outputs + [mf.MASK_TOP_SCORES, mf.MASK_TOP_IDS]


def build_module(ckpt: Checkpoint) -> Any:
    """A torch.nn.Module wrapping the checkpoint with the package's graph interface."""
    import torch

    strategy = ckpt.strategy
    encoder = strategy.encoder(ckpt.model)

    class PackageGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.banded = False  # set by banded.banded_export while torch.onnx traces
            pipeline = ckpt.sentence_pipeline
            self.sentence_head = None
            if pipeline is not None and pipeline.trivial is None:  # Pooling -> Dense -> Normalize as configured
                from polyglot_onnx.export.st_modules import build_head

                self.sentence_head = build_head(pipeline)
            if ckpt.has_mlm_head:
                self.transform = strategy.transform(ckpt.model)
                self.decoder = ckpt.model.get_output_embeddings()

        def _encode(self, input_ids: Any, attention_mask: Any) -> tuple[Any, Any, Any]:
            batch, length = input_ids.shape
            # [batch, seq] positions: a [1, seq] rotary cache breaks onnxruntime for batch > 1.
            positions = torch.arange(length, device=input_ids.device).unsqueeze(0).expand(batch, length)
            kwargs = {"token_type_ids": torch.zeros_like(input_ids)} if strategy.needs_token_type_ids else {}
            if not strategy.positions_after_pad:  # RoBERTa derives them from input_ids and its padding index
                kwargs["position_ids"] = positions
            masks: Any = attention_mask
            if self.banded:  # local layers get the [b, L] mask; the dense band mask is never built
                from polyglot_onnx.export.banded import mask_mapping

                masks = mask_mapping(self.encoder, input_ids, attention_mask)
            hidden = self.encoder(
                input_ids=input_ids, attention_mask=masks, **kwargs
            ).last_hidden_state
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
            if self.sentence_head is not None:
                mean = self.sentence_head(hidden, attention_mask)
            return hidden, mean, hidden[:, 0]

        def forward(self, input_ids: Any, attention_mask: Any, mask_positions: Any = None) -> Any:
            hidden, mean, cls = self._encode(input_ids, attention_mask)
            if not ckpt.has_mlm_head:
                return hidden, mean, cls
            picked = hidden.reshape(-1, hidden.shape[-1]).index_select(0, mask_positions)
            logits = torch.nn.functional.linear(
                self.transform(picked), self.decoder.weight, self.decoder.bias
            )
            return hidden, mean, cls, logits

    return PackageGraph().eval()


def example_inputs(ckpt: Checkpoint) -> tuple[Any, ...]:
    import torch

    high = max(ckpt.special_ids.values()) + 1
    if high + 50 > int(ckpt.config.vocab_size):  # <mask> is the last id (xlm-roberta): stay inside the table
        high = len(ckpt.special_ids)
    ids = torch.randint(high, high + 50, (2, 24), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 16:] = 0
    if ckpt.has_mlm_head:
        return ids, mask, torch.tensor([3, 30], dtype=torch.long)
    return ids, mask


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The dynamo exporter logs optional-op registrations and deprecation notices: not the user's concern."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_onnx(ckpt: Checkpoint, module: Any, banded: bool = False) -> Any:
    """torch.onnx dynamo export at opset 23: SDPA becomes ai.onnx Attention, rotary RotaryEmbedding.

    ``banded`` traces local (sliding-window) layers as block-banded attention (export/banded.py).
    """
    import torch

    from polyglot_onnx.export.banded import banded_export

    inputs, outputs = graph_io(ckpt.has_mlm_head)
    dynamic: dict[str, dict[int, str]] = {
        mf.INPUT_IDS: {0: "batch", 1: "sequence"},
        mf.ATTENTION_MASK: {0: "batch", 1: "sequence"},
    }
    if ckpt.has_mlm_head:
        dynamic[mf.MASK_POSITIONS] = {0: "masks"}
    patch = banded_export(module) if banded else contextlib.nullcontext()
    with torch.no_grad(), _quiet_exporter(), patch:
        program = torch.onnx.export(
            module,
            example_inputs(ckpt),
            dynamo=True,
            opset_version=OPSET,
            input_names=inputs,
            output_names=outputs,
            dynamic_shapes=dynamic,
            verbose=False,
        )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    return program.model_proto
