"""The contenders, each driven the way its users drive it, behind one small call interface.

- torch: transformers eager, as its pipelines run: the fill-mask pipeline itself (LM head over
  every token, softmax and top-k on the mask row, decoded sequences); embeddings as
  sentence-transformers computes them (tokenizer padding to the longest in arrival order, masked
  mean, L2 normalisation).
- optimum: the graphs Optimum's exporter, ORTOptimizer and ORTQuantizer wrote, run by this
  process's onnxruntime with the transformers tokenizer and the same post-processing as the
  pipelines (ORTModelFor* + pipeline): full logits out of the graph, softmax on the mask row.
- ortopt: onnxruntime.transformers.optimizer's graph (Optimum O2 / O4 without Optimum: ortopt_build.py),
  driven exactly as the optimum graphs are.
- polyglot: a package variant through the public FillMask / Embedder API; dense: the same, from a
  package exported with dense band-masked local attention (ModernBERT), for the banded-vs-dense rows.

A contender that would need more memory than the row allows (the full-sequence logits of a
256k vocabulary at batch 32 x 512 are 16 GB) is skipped for that row with the reason recorded.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from polyglot_onnx.bench.workloads import EMBED, FILL_MASK

TOP_K = 5


@dataclass(frozen=True)
class ContenderSpec:
    """Everything a worker process needs to load one contender (plain data, sent as JSON)."""

    family: str  # torch | optimum | ortopt | polyglot | dense
    variant: str  # torch: fp32/fp16; optimum: fp32/O2/int8/O4; polyglot: a package variant
    provider: str  # cpu | cuda
    threads: int
    checkpoint: str
    graphs: dict[str, str] = field(default_factory=dict)  # task -> ONNX file (optimum) or package dir (polyglot)

    @property
    def label(self) -> str:
        return f"{self.family}:{self.variant}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def row_fields(self) -> dict[str, Any]:
        """What every result row says about its contender (no file paths)."""
        fields = {k: v for k, v in self.as_dict().items() if k not in ("graphs", "checkpoint")}
        return {**fields, "label": self.label}


def _mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask[..., None].astype(hidden.dtype)
    pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


def _chunks(texts: list[str], size: int) -> list[list[str]]:
    return [texts[i : i + size] for i in range(0, len(texts), size)]


class Runner:
    """Loads once, then answers ``call(texts, batch)`` for one task; reports its size on disk."""

    def __init__(self, spec: ContenderSpec, task: str) -> None:
        self.spec = spec
        self.task = task
        self.load_seconds = 0.0

    def load(self) -> None:
        start = time.perf_counter()
        self._load()
        self.load_seconds = time.perf_counter() - start

    def _load(self) -> None:
        raise NotImplementedError

    def size_bytes(self) -> int:
        raise NotImplementedError

    def memory_need(self, batch: int, seq: int) -> int:
        """Bytes of the largest tensor this contender materialises for one batch (for the memory guard)."""
        return 0

    def call(self, texts: list[str], batch: int) -> Any:
        raise NotImplementedError

    def call_document(self, texts: list[str]) -> Any:
        """Embed each text whole however long (document rows); only polyglot offers it."""
        raise NotImplementedError(f"{self.spec.family} truncates at the model maximum: no document rows")


class PolyglotRunner(Runner):
    def _load(self) -> None:
        from polyglot_onnx.runtime import Embedder, FillMask

        package = self.spec.graphs["package"]
        kind = FillMask if self.task == FILL_MASK else Embedder
        # sha256 verification is off: the row times loading, not hashing (about 1 s per GB when on)
        self.client = kind.load(package, provider=self.spec.provider, variant=self.spec.variant,
                                threads=self.spec.threads, verify=False)

    def size_bytes(self) -> int:
        return sum(f.size for f in self.client.engine.package.variant.files)

    def call(self, texts: list[str], batch: int) -> Any:
        if self.task == FILL_MASK:
            return self.client(texts, top_k=TOP_K, batch_size=batch)
        return self.client.encode(texts, batch_size=batch)

    def call_document(self, texts: list[str]) -> Any:
        return self.client.encode(texts, batch_size=1, long_text="window")


class TorchRunner(Runner):
    def _load(self) -> None:
        import torch
        from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline
        from transformers.utils import logging

        logging.set_verbosity_error()
        logging.disable_progress_bar()
        torch.set_num_threads(self.spec.threads)
        self.device = "cuda" if self.spec.provider == "cuda" else "cpu"
        dtype = torch.float16 if self.spec.variant == "fp16" else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(self.spec.checkpoint)
        self.model = AutoModelForMaskedLM.from_pretrained(self.spec.checkpoint, dtype=dtype,
                                                          attn_implementation="sdpa").to(self.device).eval()
        self.vocab = int(self.model.config.vocab_size)
        self.pipe = pipeline("fill-mask", model=self.model, tokenizer=self.tokenizer, device=self.device, top_k=TOP_K)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in Path(self.spec.checkpoint).glob("*.safetensors"))

    def memory_need(self, batch: int, seq: int) -> int:
        return batch * seq * self.vocab * 4 if self.task == FILL_MASK else 0

    def call(self, texts: list[str], batch: int) -> Any:
        import torch

        if self.task == FILL_MASK:
            return self.pipe(texts, batch_size=batch)
        out = []
        with torch.inference_mode():
            for chunk in _chunks(texts, batch):
                inputs = self.tokenizer(chunk, padding=True, truncation=True, return_tensors="pt").to(self.device)
                hidden = self.model.base_model(**inputs).last_hidden_state
                mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy())
        return np.concatenate(out)


class OptimumRunner(Runner):
    """An Optimum-built graph on this process's onnxruntime; I/O binding on CUDA as ORTModel does."""

    def _load(self) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer
        from transformers.utils import logging

        logging.set_verbosity_error()
        self.tokenizer = AutoTokenizer.from_pretrained(self.spec.checkpoint)
        self.mask_id = self.tokenizer.mask_token_id
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.spec.threads
        options.log_severity_level = 3
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if self.spec.provider == "cuda" else [
            "CPUExecutionProvider"]
        if self.spec.provider == "cuda":
            from polyglot_onnx.runtime.providers import preload_cuda_libraries

            preload_cuda_libraries()
        self.path = Path(self.spec.graphs[self.task])
        self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.output = "logits" if self.task == FILL_MASK else "last_hidden_state"
        self.vocab = int(self.session.get_outputs()[0].shape[-1]) if self.task == FILL_MASK else 0

    def size_bytes(self) -> int:
        data = [p for p in self.path.parent.glob(self.path.name + "*")]
        return sum(p.stat().st_size for p in data)

    def memory_need(self, batch: int, seq: int) -> int:
        return batch * seq * self.vocab * 4

    def _run(self, enc: dict[str, np.ndarray]) -> np.ndarray:
        feeds = {name: enc[name] if name in enc else np.zeros_like(enc["input_ids"]) for name in self.inputs}
        if self.spec.provider != "cuda":
            return self.session.run([self.output], feeds)[0]
        import onnxruntime as ort

        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, "cuda", 0))
        binding.bind_output(self.output, "cuda")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def call(self, texts: list[str], batch: int) -> Any:
        out: list[Any] = []
        for chunk in _chunks(texts, batch):
            enc = dict(self.tokenizer(chunk, padding=True, truncation=True, return_tensors="np"))
            enc = {k: v.astype(np.int64) for k, v in enc.items()}
            result = self._run(enc)
            if self.task == EMBED:
                out.append(_mean_pool(result.astype(np.float32), enc["attention_mask"]))
                continue
            for row, ids in enumerate(enc["input_ids"]):
                out.append(self._fill(ids, result[row]))
        return np.concatenate(out) if self.task == EMBED else out

    def _fill(self, ids: np.ndarray, logits: np.ndarray) -> list[dict[str, Any]]:
        """The fill-mask pipeline's post-processing: softmax, top-k, decoded sequences."""
        pos = int(np.flatnonzero(ids == self.mask_id)[0])
        row = logits[pos].astype(np.float64)
        probs = np.exp(row - row.max())
        probs /= probs.sum()
        best = np.argsort(-probs)[:TOP_K]
        preds = []
        for token in best:
            filled = ids.copy()
            filled[pos] = token
            preds.append({"score": float(probs[token]), "token": int(token),
                          "token_str": self.tokenizer.decode([int(token)]),
                          "sequence": self.tokenizer.decode(filled, skip_special_tokens=True)})
        return preds


RUNNERS: dict[str, type[Runner]] = {"torch": TorchRunner, "optimum": OptimumRunner, "ortopt": OptimumRunner,
                                     "polyglot": PolyglotRunner, "dense": PolyglotRunner}


def make_runner(spec: ContenderSpec, task: str) -> Runner:
    return RUNNERS[spec.family](spec, task)
