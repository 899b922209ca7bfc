#!/usr/bin/env bash
# mypy --strict on the public seams: the runtime, the server and the corpus jobs (and everything of the
# package they import). The stages live in top-level folders that install as polyglot_onnx.* through
# pyproject's package-dir, which mypy cannot follow in an editable install, so the package is laid out
# as it installs (symlinks in a temporary folder) and checked there.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/polyglot_onnx"
for f in polyglot_onnx/*; do ln -s "$root/$f" "$work/polyglot_onnx/"; done
for d in export quantize runtime serve jobs; do ln -s "$root/$d" "$work/polyglot_onnx/$d"; done
ln -s "$root/benchmarks/suite" "$work/polyglot_onnx/bench"
cd "$work"
PY=${PYTHON:-$root/.venv/bin/python}
"$PY" -m mypy --config-file "$root/pyproject.toml" -p polyglot_onnx.runtime -p polyglot_onnx.serve \
  -p polyglot_onnx.jobs 2>&1 | sed "s#$work/##g"
