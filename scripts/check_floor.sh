#!/usr/bin/env bash
# The export on the oldest torch and transformers the package admits (scripts/constraints-floor.txt), in a
# virtualenv of its own: tiny BERT and tiny ModernBERT exported, validated against PyTorch, run by the runtime.
# The pinned versions are covered by the main test suite. Set POLYGLOT_SKIP_FLOOR=1 to skip (it says so).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${POLYGLOT_SKIP_FLOOR:-0}" = "1" ]; then
  echo "floor export check SKIPPED (POLYGLOT_SKIP_FLOOR=1)"
  exit 0
fi
PY=${PYTHON:-python3}
VENV=${FLOOR_VENV:-.venv-floor}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# the pinned versions, with torch and transformers at their floors (tokenizers and huggingface_hub: what
# transformers 5.1 admits; the test pins of the newest hub would not resolve with it)
grep -v -e '^torch==' -e '^transformers==' -e '^tokenizers==' -e '^huggingface_hub==' \
  scripts/constraints.txt > "$VENV/constraints.txt"
cat scripts/constraints-floor.txt >> "$VENV/constraints.txt"
quiet() { grep -v "^WARNING: Location" || test $? = 1; }  # pip's own failure still fails the pipeline
"$VENV/bin/pip" install -q --disable-pip-version-check -c "$VENV/constraints.txt" torch transformers 2>&1 | quiet
"$VENV/bin/pip" install -q --disable-pip-version-check -c "$VENV/constraints.txt" -e ".[export]" 2>&1 | quiet
"$VENV/bin/python" scripts/floor_export.py
