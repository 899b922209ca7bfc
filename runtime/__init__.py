"""Stage 3: the thin runtime. onnxruntime + tokenizers + numpy, nothing else.

It reads a package directory and imports neither the export nor the quantize stage.
"""

from polyglot_onnx.runtime.embedder import Embedder, Tokenized
from polyglot_onnx.runtime.fill_mask import FillMask, FillMaskLimits
from polyglot_onnx.runtime.records import TokenEmbeddings, WordEmbeddings
from polyglot_onnx.runtime.text import TextLimits

__all__ = ["Embedder", "FillMask", "FillMaskLimits", "TextLimits", "TokenEmbeddings", "Tokenized", "WordEmbeddings"]
