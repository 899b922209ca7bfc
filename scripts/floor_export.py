"""Export the tiny BERT and ModernBERT fixtures with whatever torch / transformers are installed, and run them.

scripts/check_floor.sh runs this in a virtualenv holding the oldest versions the package admits. The export
validates the graph against PyTorch itself; this adds a fill-mask and an embedding call through the runtime,
and fails (exit 1) naming the model and the versions.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "multilingual.txt"


def main() -> int:
    import numpy as np
    import torch
    import transformers

    from polyglot_onnx import Embedder, FillMask
    from polyglot_onnx.export import ExportOptions, export_package
    from polyglot_onnx.export.families.bert import build_tiny_bert
    from polyglot_onnx.export.families.modernbert import build_tiny_modernbert

    versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
    print(f"floor export check: {versions}")
    builders = {"tiny-bert": (build_tiny_bert, "[MASK]"), "tiny-modernbert": (build_tiny_modernbert, "<mask>")}
    with tempfile.TemporaryDirectory(prefix="polyglot-floor-") as tmp:
        for name, (build, mask) in builders.items():
            start = time.perf_counter()
            try:
                ckpt = build(Path(tmp) / "ckpt" / name, CORPUS)
                manifest = export_package(str(ckpt), Path(tmp) / name, ExportOptions(show_progress=False))
                top = FillMask.load(Path(tmp) / name, provider="cpu", variant="fp32")(f"Hello {mask} world", top_k=3)
                vectors = Embedder.load(Path(tmp) / name, provider="cpu", variant="fp32").encode(["hello", "hallo"])
            except Exception as err:  # noqa: BLE001 - any failure on the floor versions is the finding
                print(f"FAILED {name} on {versions}: {type(err).__name__}: {err}", file=sys.stderr)
                return 1
            if len(top) != 3 or not np.isfinite(vectors).all():
                print(f"FAILED {name} on {versions}: wrong fill-mask or embedding output", file=sys.stderr)
                return 1
            diff = max(manifest.variants["fp32"].validation["max_abs_diff"].values())
            print(f"  {name}: exported and validated (max abs diff {diff:.1e}), fill-mask and embed ran "
                  f"({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
