#!/usr/bin/env bash
# The main job: export -> fill-mask -> embed.
#   scripts/run.sh                 the embedded default (tiny BERT and ModernBERT built locally)
#   scripts/run.sh mmbert-small    a catalog name, hub id or local checkpoint directory
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
python -m polyglot_onnx demo "$@"
