"""``polyglot-onnx embed --precision P [--ranges FILE]``: quantized sentence vectors from the command line.

The runtime's ``Embedder.encode`` does the quantizing (sentence-transformers semantics) and checks
the combinations (token output, ranges with binary, one text with int8 and no ranges); this module
only adds the flags, reads the ranges file (JSON, never pickle) and turns the vectors into JSON.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from polyglot_onnx.errors import InputError
from polyglot_onnx.runtime.sentence_options import PRECISIONS


def add_precision_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="quantize sentence vectors as sentence-transformers does (JSON output: integer lists)")
    p.add_argument("--ranges", default=None, metavar="FILE",
                   help="int8/uint8: JSON [[min per dimension...], [max per dimension...]] from a representative set "
                        "(default: the min and max of the given texts; needed for a single text)")


def load_ranges(path: str | None) -> np.ndarray | None:
    """The --ranges file as a float32 [2, dim] array; a one-line InputError for anything else."""
    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise InputError(f"--ranges {path} cannot be read ({err.strerror or err}): pass an existing JSON file") from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"--ranges {path} is not JSON ({err}): write [[mins...], [maxs...]]") from err
    rows = data if isinstance(data, list) and len(data) == 2 and all(isinstance(r, list) for r in data) else None
    if rows is None or len(rows[0]) != len(rows[1]) or not rows[0] or not all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for r in rows for x in r
    ):
        raise InputError(f"--ranges {path} must hold two equal-length lists of finite numbers: "
                         "[[min per dimension...], [max per dimension...]]")
    return np.asarray(rows, dtype=np.float32)


def vectors_json(vectors: np.ndarray) -> list[Any]:
    """Floats rounded to 6 decimals; quantized vectors as exact integer lists."""
    if np.issubdtype(vectors.dtype, np.integer):
        return vectors.tolist()
    return vectors.round(6).tolist()
