"""Request bodies, in the shapes the OpenAI and TEI clients send. Strict types: no silent coercion."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr

# One text, one list of ids, or a list of texts and id lists (TEI takes them mixed in one request)
TextOrIds = StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]] | list[StrictStr | list[StrictInt]]
Texts = StrictStr | list[StrictStr]
Ids = list[StrictInt] | list[list[StrictInt]]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class _TextOptions(_Body):
    """Our extensions on every embedding route (the openai client sends them via ``extra_body``):
    a prompt as in sentence-transformers, and long texts read whole as overlapping windows."""

    prompt_name: StrictStr | None = None
    prompt: StrictStr | None = None
    long_text: Literal["truncate", "window"] | None = None
    window_stride: StrictInt | None = None


class _Precision(_TextOptions):
    """sentence-transformers' ``precision`` on sentence vectors: int8 / uint8 buckets over per-dimension
    ``ranges`` ([[mins], [maxs]]; without them, the request's own min and max, as quantize_embeddings
    does), or binary / ubinary packed sign bits."""

    precision: Literal["float32", "int8", "uint8", "binary", "ubinary"] = "float32"
    ranges: list[list[StrictFloat | StrictInt]] | None = None


class OpenAIEmbeddingRequest(_Precision):
    input: TextOrIds
    model: StrictStr | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = None
    user: StrictStr | None = None


class EmbedRequest(_Precision):
    """TEI's /embed and /embed_all; ``model`` is our addition for servers with several models."""

    inputs: TextOrIds
    normalize: StrictBool = True
    truncate: StrictBool | None = None
    truncation_direction: Literal["Left", "Right", "left", "right"] = "Right"
    dimensions: StrictInt | None = None
    model: StrictStr | None = None


class TokenizeRequest(_Body):
    """TEI's /tokenize; ``prompt_name`` (TEI's) or ``prompt`` (ours) is prepended as the embedding routes do."""

    inputs: Texts
    add_special_tokens: StrictBool = True
    prompt_name: StrictStr | None = None
    prompt: StrictStr | None = None
    model: StrictStr | None = None


class DecodeRequest(_Body):
    """TEI's /decode: ids (one list, or a list of lists) back to text."""

    ids: Ids
    skip_special_tokens: StrictBool = True
    model: StrictStr | None = None


class SimilarityInput(_Body):
    source_sentence: StrictStr
    sentences: list[StrictStr]


class SimilarityParameters(_Body):
    truncate: StrictBool | None = None
    truncation_direction: Literal["Left", "Right", "left", "right"] = "Right"
    prompt_name: StrictStr | None = None


class SimilarityRequest(_Body):
    """TEI's /similarity (the Inference API's sentence-similarity task): cosine of each sentence to the source."""

    inputs: SimilarityInput
    parameters: SimilarityParameters | None = None
    model: StrictStr | None = None


class FillMaskRequest(_Body):
    """The transformers fill-mask pipeline's arguments."""

    inputs: Texts
    top_k: StrictInt = 5
    targets: Texts | None = None
    model: StrictStr | None = None


class WordsRequest(_TextOptions):
    """Word-level embeddings: subword vectors mean-pooled per word (the runtime's output='word')."""

    inputs: Texts
    normalize: StrictBool = True
    truncate: StrictBool | None = None
    model: StrictStr | None = None
