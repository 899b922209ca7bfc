"""sentence-transformers' names on the Embedder: encode's keywords, similarity, dimension, max_seq_length.

Code written for ``SentenceTransformer(...)`` should move here by changing the line that loads the model, so
every keyword sentence-transformers has and this runtime can honour maps onto the runtime's own; those that
need torch are refused with the fix. Results are numpy where sentence-transformers gives torch tensors.
Kept apart from runtime/embedder.py so that the Embedder's own encode stays readable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

import numpy as np

from polyglot_onnx.errors import DependencyError, InputError, PackageError
from polyglot_onnx.manifest import SIMILARITY_FUNCTIONS
from polyglot_onnx.runtime.sentence_options import normalized

if TYPE_CHECKING:
    from polyglot_onnx.runtime.engine import Engine

T = TypeVar("T")
# output_value -> what encode makes: our own output kind, or sentence-transformers' shapes
ST_OUTPUTS: dict[str | None, str] = {"sentence_embedding": "sentence", "token_embeddings": "token_embeddings",
                                     None: "both"}
DEVICES = {"cpu": "cpu", "cuda": "cuda", "cuda:0": "cuda"}  # sessions run on CUDA device 0 (runtime/engine.py)
MANHATTAN_CHUNK = 1 << 24  # elements of the [rows, m, d] difference block computed at a time


class EncodeKeywords(TypedDict, total=False):
    """Embedder.encode's keyword-only options that do not change the type it returns (its overloads share them)."""

    prompt_name: str | None
    prompt: str | None
    dimensions: int | None
    precision: str
    ranges: np.ndarray | None
    normalize_embeddings: bool | None
    truncate_dim: int | None
    convert_to_tensor: bool
    show_progress_bar: bool | None
    device: str | None


def alias(ours: str, ours_value: T | None, theirs: str, theirs_value: T | None, default: T) -> T:
    """Our keyword or sentence-transformers' name for it; both given with different values is a mistake to
    refuse, since either silently winning would hide it."""
    if ours_value is not None and theirs_value is not None and ours_value != theirs_value:
        raise InputError(f"{ours}={ours_value!r} and {theirs}={theirs_value!r} disagree: pass only one of them "
                         f"({theirs} is sentence-transformers' name for {ours})")
    if ours_value is not None:
        return ours_value
    return theirs_value if theirs_value is not None else default


def output_kind(output: str, output_value: Any) -> str:
    """What encode makes: 'sentence' / 'token' / 'word' (ours), 'token_embeddings' (a [n_tokens, hidden] array
    per text, as sentence-transformers returns) or 'both' (its dicts, for output_value=None)."""
    if not (output_value is None or isinstance(output_value, str)) or output_value not in ST_OUTPUTS:
        raise InputError(f"unknown output_value {output_value!r}: choose 'sentence_embedding', 'token_embeddings' or None")
    if output_value == "sentence_embedding":
        return output
    if output != "sentence":
        raise InputError(f"output={output!r} and output_value={output_value!r} disagree: pass only one of them "
                         "(output='token' gives records with tokens and offsets)")
    return ST_OUTPUTS[output_value]


def check_device(device: Any, provider: str) -> None:
    """sentence-transformers moves the model per call; here the provider is fixed when the package is loaded,
    so a device is only accepted where it names that provider (a mismatch would run elsewhere than asked)."""
    if device is None:
        return
    kind = DEVICES.get(str(device))
    if kind is None:
        raise InputError(f"device {device!r} is not one this runtime runs on: pass 'cpu', 'cuda' or 'cuda:0', "
                         "or leave it out (the provider is chosen by Embedder.load(path, provider=...))")
    if kind != provider:
        raise InputError(f"device={device!r} but this Embedder runs on {provider}: load it with "
                         f"Embedder.load(path, provider={kind!r})")


def check_tensor(convert_to_tensor: Any) -> None:
    if convert_to_tensor:
        raise InputError("convert_to_tensor=True needs torch, which the runtime does not use: pass "
                         "convert_to_numpy=True (the default) and torch.from_numpy() the result if you need a tensor")


@contextmanager
def progress(show: Any, total: int) -> Iterator[Callable[[int], None] | None]:
    """A tqdm bar advanced after each batch by the texts it finished, when asked for; tqdm is optional (the
    runtime installs onnxruntime, tokenizers and numpy only), so it is imported here and nowhere else."""
    if show is not None and not isinstance(show, bool):
        raise InputError(f"show_progress_bar is {show!r}: pass True, False or None (no bar)")
    if not show:
        yield None
        return
    try:
        from tqdm import tqdm
    except ImportError as err:
        raise DependencyError("show_progress_bar=True needs tqdm, which the runtime does not install: "
                              "pip install tqdm (or leave show_progress_bar out)") from err
    with tqdm(total=total, desc="Batches", unit="text") as bar:
        yield bar.update


def sentence_transformers_output(run: Callable[..., Any], kind: str, normalize: bool, dimensions: int | None,
                                 precision: str, ranges: Any, on_batch: Callable[[int], None] | None) -> list[Any]:
    """output_value='token_embeddings' or None: sentence-transformers leaves token vectors as the model gives
    them, so they are never normalized here; ``normalize`` and ``dimensions`` act on the sentence vector."""
    if precision != "float32" or ranges is not None:
        raise InputError("precision and ranges apply to sentence embeddings only: drop them, or use "
                         "output_value='sentence_embedding'")
    if kind == "token_embeddings" and dimensions is not None:
        raise InputError("truncate_dim / dimensions apply to sentence embeddings only: drop it, or use "
                         "output_value=None for dicts with both")
    tokens = [record.embeddings for record in run(normalize=False, output="token", on_batch=on_batch)]
    if kind == "token_embeddings":
        return tokens
    sentences = run(normalize=normalize, output="sentence", dimensions=dimensions, on_batch=on_batch)
    return [{"sentence_embedding": s, "token_embeddings": t} for s, t in zip(sentences, tokens)]


def shaped(out: Any, kind: str, single: bool, convert_to_numpy: bool) -> Any:
    """One text in, one result out (sentence-transformers' rule); records of output='token' / 'word' stay a
    list as before. convert_to_numpy=False: a list of [d] vectors, as sentence-transformers gives tensors."""
    if kind in ("token", "word"):
        return out
    if single:
        return out[0]
    return list(out) if kind == "sentence" and not convert_to_numpy else out


def check_similarity_name(name: Any) -> str:
    if name not in SIMILARITY_FUNCTIONS:
        raise InputError(f"unknown similarity function {name!r}: choose {', '.join(SIMILARITY_FUNCTIONS)}")
    return str(name)


def _matrix(x: Any, what: str) -> np.ndarray:
    """[d] or [n, d] (a list of [d] vectors too, as encode(convert_to_numpy=False) gives) -> float32 [n, d]."""
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise InputError(f"{what} must be embeddings (an array encode returned), not {type(x).__name__}") from err
    arr = arr[None, :] if arr.ndim == 1 else arr
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise InputError(f"{what} has shape {np.shape(x)}: pass a [dim] vector or an [n, dim] matrix from encode")
    return arr


def _pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = _matrix(a, "embeddings1"), _matrix(b, "embeddings2")
    if x.shape[1] != y.shape[1]:
        raise InputError(f"embeddings1 are {x.shape[1]} wide and embeddings2 {y.shape[1]}: embed both with the "
                         "same model, dimensions and precision")
    return x, y


def _manhattan(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    rows = max(1, MANHATTAN_CHUNK // max(1, y.size))
    return -np.concatenate([np.abs(x[i : i + rows, None, :] - y[None]).sum(-1) for i in range(0, len(x), rows)])


def _euclidean(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x64, y64 = x.astype(np.float64), y.astype(np.float64)  # |x|^2 - 2xy + |y|^2 cancels badly in float32
    squared = (x64**2).sum(1)[:, None] - 2 * x64 @ y64.T + (y64**2).sum(1)[None, :]
    out: np.ndarray = -np.sqrt(np.maximum(squared, 0.0))
    return out


MATRIX: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "cosine": lambda x, y: normalized(x) @ normalized(y).T,
    "dot": lambda x, y: x @ y.T,
    "euclidean": _euclidean,
    "manhattan": _manhattan,
}
PAIRWISE: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "cosine": lambda x, y: (normalized(x) * normalized(y)).sum(-1),
    "dot": lambda x, y: (x * y).sum(-1),
    "euclidean": lambda x, y: -np.sqrt(((x.astype(np.float64) - y) ** 2).sum(-1)),
    "manhattan": lambda x, y: -np.abs(x - y).sum(-1),
}


def similarity(a: Any, b: Any, name: str) -> np.ndarray:
    """sentence-transformers' model.similarity in numpy: float32 [n, m] scores (negative distances for
    euclidean and manhattan, so that higher is always closer)."""
    x, y = _pair(a, b)
    return np.asarray(MATRIX[check_similarity_name(name)](x, y), dtype=np.float32)


def similarity_pairwise(a: Any, b: Any, name: str) -> np.ndarray:
    """float32 [n]: the score of a[i] with b[i]."""
    x, y = _pair(a, b)
    if len(x) != len(y):
        raise InputError(f"similarity_pairwise needs as many embeddings on each side, not {len(x)} and {len(y)}: "
                         "use similarity() for every pair")
    return np.asarray(PAIRWISE[check_similarity_name(name)](x, y), dtype=np.float32)


class SentenceTransformersMethods:
    """SentenceTransformer's model methods and properties that code calls besides encode."""

    engine: Engine
    _similarity_override: str | None = None

    if TYPE_CHECKING:

        @property
        def dimension(self) -> int: ...

    @property
    def similarity_fn_name(self) -> str:
        """What ``similarity`` computes: set here, else the package's (config_sentence_transformers.json), else
        cosine, as sentence-transformers decides it."""
        recorded = self.engine.manifest.model.similarity_fn_name
        if self._similarity_override is None and recorded is not None and recorded not in SIMILARITY_FUNCTIONS:
            raise PackageError(f"manifest.json model.similarity_fn_name is {recorded!r}, not one of "
                               f"{', '.join(SIMILARITY_FUNCTIONS)}: set emb.similarity_fn_name, or re-export")
        return self._similarity_override or recorded or "cosine"

    @similarity_fn_name.setter
    def similarity_fn_name(self, name: str) -> None:
        self._similarity_override = check_similarity_name(name)

    def similarity(self, embeddings1: Any, embeddings2: Any) -> np.ndarray:
        """[n, m] scores of every pair, with the model's similarity function (a [d] vector counts as n = 1)."""
        return similarity(embeddings1, embeddings2, self.similarity_fn_name)

    def similarity_pairwise(self, embeddings1: Any, embeddings2: Any) -> np.ndarray:
        """[n] scores of embeddings1[i] with embeddings2[i]."""
        return similarity_pairwise(embeddings1, embeddings2, self.similarity_fn_name)

    def get_sentence_embedding_dimension(self) -> int:
        """The sentence vector's width: the Dense projection's where the package has one (encode's
        ``dimensions`` / ``truncate_dim`` narrows one call, not the model)."""
        return self.dimension

    def get_embedding_dimension(self) -> int:
        """sentence-transformers 6's name for get_sentence_embedding_dimension."""
        return self.dimension

    @property
    def max_seq_length(self) -> int:
        """Tokens a text is truncated to (special tokens included)."""
        return self.engine.text.max_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        """Shorter than the package's maximum only (the graph's positions end there); it changes the loaded
        engine's tokenizer, so set it before encoding, as with sentence-transformers."""
        self.engine.text.set_max_length(value)

    @property
    def tokenizer(self) -> Any:
        """The ``tokenizers.Tokenizer`` encode uses (truncating at max_seq_length), not a transformers one."""
        return self.engine.text.tokenizer
