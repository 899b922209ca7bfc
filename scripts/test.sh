#!/usr/bin/env bash
# mypy --strict on the runtime, the server and the corpus jobs; the test suite; the same runtime in a virtualenv
# that has no torch, transformers or onnx; the export on the oldest torch / transformers the package admits
# (scripts/check_floor.sh, its own virtualenv).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
scripts/check_types.sh
python -m pytest -q "$@"
scripts/check_runtime_only.sh
scripts/check_floor.sh
