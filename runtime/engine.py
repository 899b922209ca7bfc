"""The loaded package: session + tokenizer + manifest, shared by FillMask and Embedder."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from polyglot_onnx import manifest as mf
from polyglot_onnx.errors import InputError, NonFiniteOutputError, PackageError, PolyglotError, first_line
from polyglot_onnx.graph_feeds import graph_feeds
from polyglot_onnx.runtime.cpu import detect_cpu, warn_if_foreign_evidence
from polyglot_onnx.runtime.package import OpenedPackage, open_package
from polyglot_onnx.runtime.providers import cap_threads, create_session, resolve_provider
from polyglot_onnx.runtime.text import TextEncoder

# A call over this many padded tokens hands the CPU arena's new blocks back when it ends. onnxruntime keeps
# whatever its memory arena grew to for the session's life: one 64 x 256 MiniLM batch left a process at
# 2.6 GB instead of 0.2 GB; with shrinkage after such calls it stays at 0.23 GB, and small calls keep the
# arena's speed (measured: benchmarks/results/hostile/clients.md, "RSS after").
ARENA_SHRINK_TOKENS = 4096


def _shrink_after(tokens: int) -> Any:
    """RunOptions that shrink the CPU arena after a large call; None (the default options) otherwise."""
    if tokens < ARENA_SHRINK_TOKENS:
        return None
    import onnxruntime as ort

    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


# Batch width rounded up per provider (padding is masked out, so results do not change).
PAD_MULTIPLE: dict[str, int] = {"cuda": 8}


@dataclass
class Engine:
    package: OpenedPackage
    session: Any
    text: TextEncoder
    memory_arena: bool = True  # the session keeps onnxruntime's CPU arena (shrunk after large calls)

    @property
    def provider(self) -> str:
        """The execution provider that actually runs the graph."""
        return str(self.session.get_providers()[0])

    @property
    def provider_name(self) -> str:
        """'cuda' or 'cpu': the provider as the manifest's evidence and the CLI name it."""
        return "cuda" if self.provider == "CUDAExecutionProvider" else "cpu"

    @property
    def manifest(self) -> mf.Manifest:
        return self.package.manifest

    @property
    def variant(self) -> str:
        return self.package.variant.name

    def run(
        self,
        outputs: list[str],
        ids: np.ndarray,
        mask: np.ndarray,
        positions: np.ndarray | None = None,
        top_k: int = 5,
    ) -> list[np.ndarray]:
        # No positions make the LM head a zero-row matmul: embedding calls skip its cost.
        feeds = graph_feeds(self.manifest.inputs, ids, mask, positions, top_k)
        try:
            if self.bound:
                return self._run_bound(outputs, feeds)
            return list(self.session.run(outputs, feeds, _shrink_after(ids.size) if self.memory_arena else None))
        except Exception as err:  # onnxruntime's own error types; keep its first line only
            raise PolyglotError(
                f"onnxruntime failed on a batch of shape {tuple(ids.shape)} ({first_line(err, 200)}): "
                "lower batch_size, or check the package with 'polyglot-onnx info'"
            ) from err

    @property
    def top_k_in_graph(self) -> bool:
        """Whether the graph finishes fill-mask itself (softmax + top k, export/topk.py); older packages do not."""
        return mf.MASK_TOP_IDS in self.manifest.outputs

    @property
    def bound(self) -> bool:
        """On CUDA, inputs are copied to the device once and outputs stay there until asked for."""
        return self.provider == "CUDAExecutionProvider"

    def _run_bound(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import onnxruntime as ort

        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, "cuda", 0))
        for name in outputs:
            binding.bind_output(name, "cuda")
        self.session.run_with_iobinding(binding)
        return list(binding.copy_outputs_to_cpu())

    def describe(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "model": m.model.name,
            "architecture": m.model.architecture,
            "variant": self.variant,
            "provider": self.provider,
            "hidden_size": m.model.hidden_size,
            "max_length": m.model.max_length,
            "has_mlm_head": m.model.has_mlm_head,
            "validation": {k: v for k, v in self.package.variant.validation.items() if not k.startswith("drift")},
            "drift": drift_summary(self.package.variant, self.provider_name),
            "batch_invariant": batch_invariant(self.package.variant),
            "cpu": detect_cpu().to_dict(),
            "canary": self.manifest.canary is not None,
            "verified": self.package.verified,  # False: loaded with verify=False, files not hashed
        }

    def ensure_finite(self, values: np.ndarray, inputs: Sequence[int]) -> None:
        """Never return NaN/Inf: ``values[k]`` belongs to input ``inputs[k]``; the first bad one is named."""
        flat = values.reshape(len(values), -1)
        # A row sum is non-finite whenever the row holds NaN/Inf (half the cost of np.isfinite on a
        # 256k-wide logits row); a finite row can only overflow it, so suspects are checked exactly.
        with np.errstate(over="ignore", invalid="ignore"):
            suspects = np.flatnonzero(~np.isfinite(flat.sum(axis=1)))
        bad = [int(inputs[int(k)]) for k in suspects if not np.isfinite(flat[k]).all()]
        if not bad:
            return
        first = min(bad)
        raise NonFiniteOutputError(
            f"package {self.package.root} (variant {self.variant}) returned NaN/Inf for input {first}: its "
            "weights are corrupt or the variant overflows; re-export the package or try variant='fp32'"
        )


def batch_invariant(variant: mf.Variant) -> bool:
    """Whether a text's result is independent of its batch: what the variant's manifest entry says it is."""
    return variant.described().batch_invariant


def drift_summary(variant: mf.Variant, provider: str = "cpu") -> dict[str, Any] | None:
    """The accuracy evidence the drift checker recorded for this variant on ``provider`` (else on the CPU), or
    None if never checked; ``provider`` says where it was measured."""
    measured_on, drift = variant.evidence_for(provider)
    if not drift:
        return None
    keys = ("reference", "corpus", "passed", "overall", "failures", "checked", "machine")
    return {k: drift[k] for k in keys if k in drift} | {"provider": measured_on}


def _graph_vocab(session: Any, package: OpenedPackage) -> int:
    """Rows of the embedding table: the logits width when the graph has a head, else the manifest."""
    for out in session.get_outputs():
        if out.name == mf.MASK_LOGITS and isinstance(out.shape[-1], int):
            return int(out.shape[-1])
    return package.manifest.model.vocab_size


def check_interface(session: Any, package: OpenedPackage) -> None:
    """The graph's inputs and outputs are the manifest's, and include what the runtime feeds and reads."""
    m = package.manifest
    needed_in = [mf.INPUT_IDS, mf.ATTENTION_MASK] + ([mf.MASK_POSITIONS] if m.model.has_mlm_head else [])
    needed_out = [mf.TOKEN_EMBEDDINGS, mf.SENTENCE_EMBEDDING, mf.CLS_EMBEDDING]
    needed_out += [mf.MASK_LOGITS] if m.model.has_mlm_head else []
    if mf.MASK_TOP_IDS in m.outputs:  # the in-graph top k needs its k and both of its outputs
        needed_in.append(mf.MASK_TOP_K)
        needed_out.append(mf.MASK_TOP_SCORES)
    sides = {
        "inputs": ([i.name for i in session.get_inputs()], m.inputs, needed_in),
        "outputs": ([o.name for o in session.get_outputs()], m.outputs, needed_out),
    }
    for side, (graph, declared, needed) in sides.items():
        missing = [n for n in declared if n not in graph]
        extra = [n for n in graph if n not in declared]
        unusable = [n for n in needed if n not in declared]
        if missing or extra or unusable:
            detail = "; ".join(
                f"{what}: {', '.join(names)}"
                for what, names in (
                    ("missing from the graph", missing),
                    ("not in the manifest", extra),
                    ("needed by the runtime but not declared", unusable),
                )
                if names
            )
            raise PackageError(
                f"graph {package.variant.graph_file} does not match manifest.json {side} ({detail}): "
                "the graph or the manifest was replaced; re-export the package"
            )


def check_widths(session: Any, package: OpenedPackage) -> None:
    """The vector widths the manifest states are the graph's, where the graph fixes them: callers size
    their arrays by the manifest, so a mismatch would otherwise surface as a ValueError at the first encode."""
    model = package.manifest.model
    expected = {
        mf.TOKEN_EMBEDDINGS: ("model.hidden_size", model.hidden_size),
        mf.CLS_EMBEDDING: ("model.hidden_size", model.hidden_size),
        mf.SENTENCE_EMBEDDING: ("model.embedding_dim", model.embedding_dim)
        if model.embedding_dim
        else ("model.hidden_size", model.hidden_size),
    }
    for out in session.get_outputs():
        field, width = expected.get(out.name, ("", None))
        graph_width = out.shape[-1] if out.shape else None
        if width is not None and isinstance(graph_width, int) and graph_width != width:
            raise PackageError(
                f"manifest.json {field} is {width} but graph {package.variant.graph_file} gives {out.name} "
                f"{graph_width} wide: the graph or the manifest was replaced; re-export the package"
            )


def package_dir(directory: Any, caller: str = "load") -> Path:
    """The directory the caller named; anything but a str or path is refused in one line (Path(None)
    would be a TypeError from deep inside the loader)."""
    try:
        path = os.fspath(directory)
    except TypeError as err:
        raise InputError(
            f"{caller} got {type(directory).__name__}: pass the package directory as a str or pathlib.Path "
            "(a directory made by 'polyglot-onnx export')"
        ) from err
    if not isinstance(path, str):
        raise InputError(f"{caller} got a bytes path: pass the package directory as a str or pathlib.Path")
    return Path(path)


def load_engine(
    directory: str | os.PathLike[str],
    provider: str = "auto",
    variant: str = "auto",
    threads: int | None = None,
    verify: bool = True,
    refuse_unfit: bool = True,
    warn_evidence: bool = True,
    memory_arena: bool = True,
) -> Engine:
    """Open ``directory``; ``verify`` checks each file's sha256 (set False to skip on trusted disks)."""
    root = package_dir(directory)
    choice = resolve_provider(provider)
    package = open_package(root, variant, choice.name, verify=verify, refuse_unfit=refuse_unfit)
    if warn_evidence and choice.name == "cpu":
        warn_if_foreign_evidence(package.root, package.variant.name, package.variant.drift("cpu"))
    session = create_session(str(package.graph_path), choice, cap_threads(threads), memory_arena)
    check_interface(session, package)
    check_widths(session, package)
    text = TextEncoder(package.tokenizer_json, package.manifest.tokenizer, _graph_vocab(session, package))
    text.pad_to_multiple = PAD_MULTIPLE.get(choice.name, 1)
    return Engine(package=package, session=session, text=text, memory_arena=memory_arena)
