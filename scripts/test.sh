#!/usr/bin/env bash
# The test suite, then the same runtime in a virtualenv that has no torch, transformers or onnx.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
python -m pytest -q "$@"
scripts/check_runtime_only.sh
