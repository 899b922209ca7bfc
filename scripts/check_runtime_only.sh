#!/usr/bin/env bash
# Proves the runtime's dependency claim: a plain (non-editable) install with only the runtime
# requirements serves fill-mask and embeddings from a package built by the export stage.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "runtime-only check: building tiny packages with the export environment" >&2
.venv/bin/python -m polyglot_onnx demo --out "$work/demo" > "$work/demo.log" 2>&1 || { cat "$work/demo.log"; exit 1; }
"${PYTHON:-python3}" -m venv "$work/rt"
"$work/rt/bin/pip" install -q --disable-pip-version-check -c scripts/constraints.txt .
rt="$work/rt/bin"
"$rt/python" - <<'PY'
import importlib.util, sys
heavy = [m for m in ("torch", "transformers", "onnx", "onnxscript") if importlib.util.find_spec(m)]
assert not heavy, f"runtime environment has {heavy}"
from importlib import resources
assert resources.files("polyglot_onnx").joinpath("data/eval_corpus.jsonl").is_file(), "corpus not installed"
PY
for pkg in tiny-bert tiny-modernbert; do
  dir="$work/demo/packages/$pkg"
  mask=$("$rt/python" -c "import json,sys; print(json.load(open(sys.argv[1]))['tokenizer']['mask_token'])" "$dir/manifest.json")
  "$rt/polyglot-onnx" fill-mask "$dir" "Paris est la $mask de la France." --json > "$work/fm.json"
  "$rt/polyglot-onnx" embed "$dir" "Hello world" "Bonjour le monde" --json > "$work/emb.json"
  "$rt/python" - "$work/fm.json" "$work/emb.json" <<'PY'
import json, sys
fm, emb = (json.load(open(p)) for p in sys.argv[1:])
assert len(fm["results"][0]) == 5 and {"score", "token", "token_str", "sequence"} <= set(fm["results"][0][0])
assert fm["variant"] == emb["variant"] == "int8"  # auto on CPU: the int8 variant the demo built
assert len(emb["embeddings"]) == 2 and len(emb["embeddings"][0]) == 64
assert not any(m in sys.modules for m in ("torch", "transformers", "onnx"))
PY
  echo "runtime-only check: $pkg int8 fill-mask and embed OK without torch/transformers/onnx" >&2
done
