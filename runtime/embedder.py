"""Embedder: sentence, token and word embeddings from any package variant."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, cast, overload

import numpy as np

from polyglot_onnx import manifest as mf
from polyglot_onnx.errors import InputError
from polyglot_onnx.runtime import sentence_options as opts
from polyglot_onnx.runtime import st_compat as st
from polyglot_onnx.runtime.client import EngineClient
from polyglot_onnx.runtime.engine import Engine
from polyglot_onnx.runtime.long_text import check_mode, run_windowed
from polyglot_onnx.runtime.records import TokenEmbeddings, WordEmbeddings, token_embeddings, word_embeddings
from polyglot_onnx.runtime.text import (
    DEFAULT_TEXT_LIMITS,
    TextLimits,
    as_text_list,
    dropped_tokens,
    length_sorted_batches,
    pad_ids,
)

if TYPE_CHECKING:  # typing.Unpack is 3.11+, and the runtime supports 3.10
    from typing_extensions import Unpack

# "sentence-transformers": the checkpoint's modules.json pipeline (Pooling -> Dense -> Normalize) in the graph
POOLING_OUTPUTS: dict[str, str] = {
    "mean": mf.SENTENCE_EMBEDDING,
    "cls": mf.CLS_EMBEDDING,
    "sentence-transformers": mf.SENTENCE_EMBEDDING,
}
OUTPUT_KINDS = ("sentence", "token", "word")


@dataclass(frozen=True)
class Tokenized:
    """Texts as the model sees them (prompt prepended), their encodings, and the long-text mode they were
    tokenized for; ``Embedder.tokenize`` makes one, ``Embedder.encode_tokenized`` embeds it."""

    texts: list[str]
    encodings: list[Any]
    long_text: str = "truncate"

    def __len__(self) -> int:
        return len(self.texts)

    def select(self, indices: Sequence[int]) -> Tokenized:
        """A subset in the given order: the batch a caller's own batching chose."""
        return Tokenized([self.texts[i] for i in indices], [self.encodings[i] for i in indices], self.long_text)

    def token_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Tokens per text with special tokens, and whether the model maximum cut it. In 'window' mode a
        long text is embedded whole: its count is every token, and nothing is cut."""
        kept = np.array([len(e.ids) for e in self.encodings], dtype=np.int32)
        dropped = np.array([dropped_tokens(e) for e in self.encodings], dtype=np.int32)
        if self.long_text == "window":
            return kept + dropped, np.zeros(len(kept), dtype=bool)
        return kept, dropped > 0


class Embedder(EngineClient, st.SentenceTransformersMethods):
    """Sentence vectors for search and clustering; token and word vectors for alignment and tagging.

    ``limits`` (``Embedder.load(path, limits=TextLimits(...))``) bound one call's long-text work and
    prompt; the server passes the same object. SentenceTransformer's methods (similarity,
    get_sentence_embedding_dimension, max_seq_length, tokenizer) come from runtime/st_compat.py.
    """

    def __init__(self, engine: Engine, limits: TextLimits = DEFAULT_TEXT_LIMITS) -> None:
        if not isinstance(limits, TextLimits):
            raise InputError(f"limits must be a TextLimits, not {type(limits).__name__}")
        super().__init__(engine)
        self.limits = limits

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"limits": vars(self.limits).copy()}

    @property
    def dimension(self) -> int:
        model = self.engine.manifest.model
        return model.embedding_dim or model.hidden_size

    # Typed by what comes back: one str gives one result (sentence-transformers' rule), a list one per text;
    # output= picks our records, output_value= / convert_to_numpy= sentence-transformers' shapes. A str is also a
    # Sequence[str], so its overloads come first (mypy's overload-overlap: a str typed as Sequence[str] is the
    # one call these types cannot follow).
    @overload
    def encode(  # type: ignore[overload-overlap]  # see above
        self, texts: str, batch_size: int = ..., normalize: bool = ..., pooling: str | None = ...,
        output: Literal["sentence"] = ..., long_text: str = ..., window_stride: int | None = ..., *,
        output_value: Literal["sentence_embedding"] = ..., convert_to_numpy: bool = ...,
        **options: Unpack[st.EncodeKeywords],
    ) -> np.ndarray: ...

    @overload
    def encode(
        self, texts: Sequence[str], batch_size: int = ..., normalize: bool = ..., pooling: str | None = ...,
        output: Literal["sentence"] = ..., long_text: str = ..., window_stride: int | None = ..., *,
        output_value: Literal["sentence_embedding"] = ..., convert_to_numpy: Literal[True] = ...,
        **options: Unpack[st.EncodeKeywords],
    ) -> np.ndarray: ...

    @overload
    def encode(
        self, texts: Sequence[str], batch_size: int = ..., normalize: bool = ..., pooling: str | None = ...,
        output: Literal["sentence"] = ..., long_text: str = ..., window_stride: int | None = ..., *,
        output_value: Literal["sentence_embedding"] = ..., convert_to_numpy: Literal[False],
        **options: Unpack[st.EncodeKeywords],
    ) -> list[np.ndarray]: ...

    @overload
    def encode(
        self, texts: str | Sequence[str], batch_size: int = ..., normalize: bool = ..., pooling: str | None = ...,
        *, output: Literal["token"], long_text: str = ..., window_stride: int | None = ...,
        output_value: Literal["sentence_embedding"] = ..., convert_to_numpy: bool = ...,
        **options: Unpack[st.EncodeKeywords],
    ) -> list[TokenEmbeddings]: ...

    @overload
    def encode(
        self, texts: str | Sequence[str], batch_size: int = ..., normalize: bool = ..., pooling: str | None = ...,
        *, output: Literal["word"], long_text: str = ..., window_stride: int | None = ...,
        output_value: Literal["sentence_embedding"] = ..., convert_to_numpy: bool = ...,
        **options: Unpack[st.EncodeKeywords],
    ) -> list[WordEmbeddings]: ...

    @overload
    def encode(  # type: ignore[overload-overlap]  # see above
        self, texts: str, batch_size: int = ..., normalize: bool = ..., pooling: str | None = ...,
        output: Literal["sentence"] = ..., long_text: str = ..., window_stride: int | None = ..., *,
        output_value: Literal["token_embeddings"], convert_to_numpy: bool = ...,
        **options: Unpack[st.EncodeKeywords],
    ) -> np.ndarray: ...

    @overload
    def encode(
        self, texts: Sequence[str], batch_size: int = ..., normalize: bool = ..., pooling: str | None = ...,
        output: Literal["sentence"] = ..., long_text: str = ..., window_stride: int | None = ..., *,
        output_value: Literal["token_embeddings"], convert_to_numpy: bool = ...,
        **options: Unpack[st.EncodeKeywords],
    ) -> list[np.ndarray]: ...

    @overload
    def encode(  # type: ignore[overload-overlap]  # see above
        self, texts: str, batch_size: int = ..., normalize: bool = ..., pooling: str | None = ...,
        output: Literal["sentence"] = ..., long_text: str = ..., window_stride: int | None = ..., *,
        output_value: None, convert_to_numpy: bool = ...,
        **options: Unpack[st.EncodeKeywords],
    ) -> dict[str, np.ndarray]: ...

    @overload
    def encode(
        self, texts: Sequence[str], batch_size: int = ..., normalize: bool = ..., pooling: str | None = ...,
        output: Literal["sentence"] = ..., long_text: str = ..., window_stride: int | None = ..., *,
        output_value: None, convert_to_numpy: bool = ...,
        **options: Unpack[st.EncodeKeywords],
    ) -> list[dict[str, np.ndarray]]: ...

    def encode(
        self,
        texts: str | Sequence[str],
        batch_size: int = 32,
        normalize: bool | None = None,  # None: True, unless normalize_embeddings says otherwise
        pooling: str | None = None,
        output: str = "sentence",
        long_text: str = "truncate",
        window_stride: int | None = None,
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        dimensions: int | None = None,
        precision: str = "float32",
        ranges: np.ndarray | None = None,
        normalize_embeddings: bool | None = None,
        truncate_dim: int | None = None,
        output_value: str | None = "sentence_embedding",
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        show_progress_bar: bool | None = None,
        device: str | None = None,
    ) -> Any:
        """'sentence' -> float32 [n, hidden], or [hidden] for one str; 'token' / 'word' -> one record per text,
        in input order (a list, also for one str).

        ``long_text``: 'truncate' cuts a text at the model maximum (TruncationWarning); 'window' embeds
        it whole, as overlapping windows ``window_stride`` tokens apart (default half a window).
        ``prompt_name`` / ``prompt``, ``dimensions`` and ``precision`` (with int8 ``ranges``) act as in
        sentence-transformers' encode: the prompt is prepended and pooled with the text; vectors are
        truncated, then normalized, then quantized (runtime/sentence_options.py). So that code written for
        SentenceTransformer runs unchanged, its keywords are taken too (normalize_embeddings, truncate_dim,
        output_value, convert_to_numpy, show_progress_bar, device; runtime/st_compat.py, docs/python-api.md).
        """
        st.check_device(device, self.engine.provider_name)
        st.check_tensor(convert_to_tensor)
        norm = st.alias("normalize", normalize, "normalize_embeddings", normalize_embeddings, True)
        dims = st.alias("dimensions", dimensions, "truncate_dim", truncate_dim, None)
        kind = st.output_kind(output, output_value)
        tokenized = self._tokenize(texts, long_text, prompt_name, prompt)
        run = functools.partial(self.encode_tokenized, tokenized, batch_size, pooling=pooling, window_stride=window_stride)
        with st.progress(show_progress_bar, len(tokenized) * (2 if kind == "both" else 1)) as on_batch:
            if kind in ("token_embeddings", "both"):
                out = st.sentence_transformers_output(run, kind, norm, dims, precision, ranges, on_batch)
            else:
                out = run(normalize=norm, output=kind, dimensions=dims, precision=precision, ranges=ranges,
                          on_batch=on_batch)
        return st.shaped(out, kind, isinstance(texts, str), convert_to_numpy)

    def encode_query(self, texts: str | Sequence[str], prompt_name: str | None = None, prompt: str | None = None,
                     **options: Any) -> Any:
        """``encode`` with the package's query prompt, as sentence-transformers' encode_query picks it: the
        ``query`` prompt when the package has one and no prompt is given, else what ``encode`` would use."""
        return self.encode(texts, prompt_name=self._role_prompt(prompt_name, prompt, ("query",)), prompt=prompt,
                           **options)

    def encode_document(self, texts: str | Sequence[str], prompt_name: str | None = None, prompt: str | None = None,
                        **options: Any) -> Any:
        """``encode`` with the package's document prompt: ``document``, else ``passage``, else ``corpus``
        (sentence-transformers' order), when the package has one and no prompt is given."""
        return self.encode(texts, prompt_name=self._role_prompt(prompt_name, prompt, ("document", "passage", "corpus")),
                           prompt=prompt, **options)

    def _role_prompt(self, prompt_name: str | None, prompt: str | None, names: tuple[str, ...]) -> str | None:
        if prompt_name is not None or prompt is not None:
            return prompt_name
        prompts = self.engine.manifest.model.prompts
        return next((name for name in names if name in prompts), None)

    def tokenize(self, texts: str | Sequence[str], long_text: str = "truncate", *, prompt_name: str | None = None,
                 prompt: str | None = None) -> Tokenized:
        """The first half of ``encode``: check, prompt and tokenize once.

        Callers that need the token counts before embedding (a corpus job sizing its batches and
        writing n_tokens) keep the encodings and pass slices of them to ``encode_tokenized``, so each
        text is tokenized once, not twice.
        """
        return self._tokenize(texts, long_text, prompt_name, prompt)

    def _tokenize(self, texts: str | Sequence[str], long_text: str, prompt_name: str | None,
                  prompt: str | None) -> Tokenized:
        check_mode(long_text)
        items, _ = as_text_list(texts)
        if isinstance(prompt, str):
            self.limits.check_prompt(prompt)
        items = opts.with_prompt(items, opts.resolve_prompt(self.engine.manifest.model, prompt_name, prompt))
        # user -> encode / tokenize -> _tokenize -> text.encode: the TruncationWarning names the user's line
        encodings = self.engine.text.encode(items, truncating=long_text == "truncate", stacklevel=4)
        return Tokenized(items, encodings, long_text)

    def encode_tokenized(
        self,
        tokenized: Tokenized,
        batch_size: int = 32,
        normalize: bool = True,
        pooling: str | None = None,
        output: str = "sentence",
        window_stride: int | None = None,
        *,
        dimensions: int | None = None,
        precision: str = "float32",
        ranges: np.ndarray | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> Any:
        """The second half of ``encode``, over texts ``tokenize`` made (or a ``select`` of them).

        ``on_batch(n)`` is called after each batch with the texts it finished (a progress bar's hook)."""
        if not isinstance(tokenized, Tokenized):
            raise InputError(f"encode_tokenized takes what Embedder.tokenize returns, not {type(tokenized).__name__}: "
                             "call emb.tokenize(texts) first, or use emb.encode(texts)")
        items, encodings, long_text = tokenized.texts, tokenized.encodings, tokenized.long_text
        pooling = self._pooling(pooling)
        if output not in OUTPUT_KINDS:
            raise InputError(f"unknown output {output!r}: choose {', '.join(OUTPUT_KINDS)}")
        if output != "sentence" and (dimensions is not None or precision != "float32"):
            raise InputError("dimensions and precision apply to sentence embeddings only: drop them or use output='sentence'")
        width = self._width(pooling)
        opts.check_dimensions(dimensions, width)
        opts.check_precision(precision, ranges, dimensions or width)
        model = self.engine.manifest.model
        # a modules.json Normalize after plain mean / cls pooling is applied here, as sentence-transformers does
        st_normalize = pooling == model.default_pooling and model.sentence_pipeline[-1:] == ["Normalize"]
        finish = functools.partial(self._finish, normalize=normalize or st_normalize, dimensions=dimensions,
                                   precision=precision, ranges=ranges)
        if long_text == "window" and any(e.overflowing for e in encodings):
            windowed = self._encode_windowed(
                items, encodings, batch_size, normalize and output != "sentence", pooling, output, window_stride
            )
            if on_batch:
                on_batch(len(items))
            return finish(windowed) if output == "sentence" else windowed
        batches = length_sorted_batches([len(e.ids) for e in encodings], batch_size)
        if output == "sentence":
            out = np.empty((len(items), width), dtype=np.float32)
            for batch in batches:
                ids, attn = self.engine.text.pad([encodings[i] for i in batch])
                (vectors,) = self.engine.run([POOLING_OUTPUTS[pooling]], ids, attn)
                self.engine.ensure_finite(vectors, batch)
                out[batch] = vectors
                if on_batch:
                    on_batch(len(batch))
            return finish(out)
        records: list[Any] = [None] * len(items)
        for batch in batches:
            ids, attn = self.engine.text.pad([encodings[i] for i in batch])
            (hidden,) = self.engine.run([mf.TOKEN_EMBEDDINGS], ids, attn)
            for row, i in enumerate(batch):
                vectors = hidden[row, : len(encodings[i].ids)]
                self.engine.ensure_finite(vectors, [i] * len(vectors))
                record = (token_embeddings(encodings[i], vectors) if output == "token"
                          else word_embeddings(items[i], encodings[i], vectors))
                if normalize:
                    record = replace(record, embeddings=opts.normalized(record.embeddings))
                records[i] = record
            if on_batch:
                on_batch(len(batch))
        return records

    def _pooling(self, pooling: str | None) -> str:
        """The caller's pooling or the package default; 'mean' is not on offer where sentence_embedding
        holds a sentence-transformers pipeline (e.g. LaBSE's CLS -> Dense -> Normalize)."""
        model = self.engine.manifest.model
        pooling = pooling or model.default_pooling
        offered = ("sentence-transformers", "cls") if model.default_pooling == "sentence-transformers" else ("mean", "cls")
        if pooling not in offered:
            raise InputError(f"unknown pooling {pooling!r} for this package: choose {' or '.join(offered)}")
        return pooling

    def _width(self, pooling: str) -> int:
        return self.dimension if POOLING_OUTPUTS[pooling] == mf.SENTENCE_EMBEDDING else self.engine.manifest.model.hidden_size

    @staticmethod
    def _finish(
        out: np.ndarray, normalize: bool, dimensions: int | None, precision: str, ranges: np.ndarray | None
    ) -> np.ndarray:
        """sentence-transformers' order: truncate (Matryoshka), normalize, quantize."""
        if dimensions is not None:
            out = np.ascontiguousarray(out[:, :dimensions])
        if normalize:
            out = opts.normalized(out)
        return out if precision == "float32" else opts.quantize(out, precision, ranges)

    def _encode_windowed(
        self, items: list[str], encodings: list[Any], batch_size: int, normalize: bool, pooling: str, output: str,
        stride: int | None,
    ) -> Any:
        """Long texts as overlapping windows merged back token by token (runtime/long_text.py)."""
        if output == "sentence":
            check_window_pooling(pooling)
        docs, pooled, hidden = run_windowed(
            self.engine, encodings, batch_size, POOLING_OUTPUTS[pooling], stride, all_tokens=output != "sentence",
            limits=self.limits,
        )
        if output == "sentence":
            out = np.stack(pooled).astype(np.float32)
            return opts.normalized(out) if normalize else out
        records: list[Any] = []
        for text, doc, rows in zip(items, docs, hidden):
            vectors = cast(np.ndarray, rows)  # all_tokens=True above: every document's token rows are there
            record = token_embeddings(doc, vectors) if output == "token" else word_embeddings(text, doc, vectors)
            records.append(replace(record, embeddings=opts.normalized(record.embeddings)) if normalize else record)
        return records

    def encode_ids(self, rows: Sequence[Sequence[int]], pooling: str | None = None, output: str = "sentence") -> Any:
        """One padded batch of token-id rows, in the given order, unnormalized.

        For callers that tokenize and batch on their own (a server merging requests under a token
        budget): rows are model input ids with special tokens, as ``engine.text.encode`` makes them.
        'sentence' -> float32 [n, hidden]; 'token' -> one float32 [len_i, hidden] array per row.
        """
        pooling = self._pooling(pooling)
        if output not in ("sentence", "token"):
            raise InputError(f"encode_ids output must be 'sentence' or 'token', not {output!r}")
        if not rows or any(not row for row in rows):
            raise InputError("encode_ids needs at least one row, and no empty row")
        vocab = self.engine.text.tokenizer.get_vocab_size(with_added_tokens=True)
        if any(not 0 <= int(t) < vocab for row in rows for t in row):
            raise InputError(f"token ids must lie in [0, {vocab}): pass ids made by this package's tokenizer")
        ids, attn = pad_ids(rows, self.engine.manifest.tokenizer.pad_token_id, self.engine.text.pad_to_multiple)
        if output == "sentence":
            (vectors,) = self.engine.run([POOLING_OUTPUTS[pooling]], ids, attn)
            self.engine.ensure_finite(vectors, range(len(rows)))
            return vectors
        (hidden,) = self.engine.run([mf.TOKEN_EMBEDDINGS], ids, attn)
        for row, r in enumerate(rows):
            self.engine.ensure_finite(hidden[row, : len(r)], [row] * len(r))
        return [np.array(hidden[row, : len(r)]) for row, r in enumerate(rows)]


def check_window_pooling(pooling: str) -> None:
    """A long text's windows pool by mean or CLS over merged tokens; a Dense/Normalize head needs one pass."""
    if pooling not in ("mean", "cls"):
        raise InputError(
            f"long_text='window' pools a long text's merged tokens by mean or CLS, not by this package's "
            f"{pooling!r} pipeline: use long_text='truncate', or pooling='cls'"
        )
