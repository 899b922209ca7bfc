# Sourced by run.sh and test.sh: a project virtualenv with the export and test extras.
# Idempotent: a second run only checks what is installed.
set -euo pipefail
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check -c scripts/constraints.txt torch==2.13.0
"$VENV/bin/pip" install -q --disable-pip-version-check -c scripts/constraints.txt -e ".[export,quantize,test]"
export PATH="$PWD/$VENV/bin:$PATH"
