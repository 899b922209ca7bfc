#!/usr/bin/env bash
# The test suite, then the same runtime in a virtualenv that has no torch, transformers or onnx, then the export
# on the oldest torch / transformers the package admits (scripts/check_floor.sh, its own virtualenv).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
python -m pytest -q "$@"
scripts/check_runtime_only.sh
scripts/check_floor.sh
