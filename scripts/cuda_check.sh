#!/usr/bin/env bash
# One command for a GPU machine: the CUDA tests, the drift checker on CUDA, and the CUDA bench of mbert-cased and
# mmbert-base (random weights, full size) against PyTorch fp16 SDPA and onnxruntime's own optimizer graph, written
# under benchmarks/results/ with the GPU named. Budget: under 8 minutes on an H100/H200.
#
#   scripts/cuda_check.sh [--out DIR] [--work DIR] [--models "mbert-cased mmbert-base"]
#   scripts/cuda_check.sh --dry-run      # the same steps on the CPU with the tiny fixtures: checks the script
#
# On a GPU machine without package registries (../shared/FINDINGS.md): first ../shared/gpu/unpack.sh (it puts
# onnxruntime-gpu in /tmp/site), with the pinned pure-Python wheels in .whl/ (../shared/gpu/make_carry.sh); this
# script then installs those wheels and the project without dependencies, and uses the machine's own torch.
# DIR/bench/<model>-cuda-<gpu>/ gets the bench tables and plots, DIR/drift/<model>-cuda-<gpu>/ the drift report,
# DIR/cuda-check-<gpu>.log what ran and how long each step took. The work folder (exported packages, the
# optimizer's graphs) is reused by a second run on the same machine.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=benchmarks/results
WORK=${TMPDIR:-/tmp}/polyglot-cuda-work
MODELS="mbert-cased mmbert-base"
DRY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --models) MODELS=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    *) echo "cuda_check.sh: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ "$DRY" = 1 ] && PY=.venv/bin/python
if [ -d /tmp/site ]; then export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}; fi
start=$SECONDS
step() { echo "[cuda-check $((SECONDS - start)) s] $*" >&2; }
FAILED=()
failed() { FAILED+=("$1"); step "$1 FAILED (see above); going on with the next step"; }

if [ "$DRY" = 0 ]; then
  if compgen -G ".whl/*.whl" > /dev/null; then
    step "installing the carried wheels and the project (no dependencies, no index)"
    "$PY" -m pip install -q --no-deps --no-index .whl/*.whl
  fi
  "$PY" -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null || "$PY" -m pip install -q --no-deps -e .
  "$PY" - <<'PY' || { echo "cuda_check.sh: no CUDA provider here (onnxruntime-gpu and a GPU are needed; --dry-run checks the script on a CPU)" >&2; exit 2; }
import onnxruntime as ort
ort.preload_dlls()
assert "CUDAExecutionProvider" in ort.get_available_providers(), ort.get_available_providers()
PY
  GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
  PROVIDER=cuda; BATCH=1,64; SEQ_BERT=128,512; SEQ_LONG=128,512,2048,8192; WEIGHTS=--random-weights
  CORPUS=2000; CORPUS_BATCH=64; THREADS=8; VARIANTS="polyglot=fp16+fp32"; CHECKED=fp16
else
  GPU="cpu dry run"; PROVIDER=cpu; BATCH=1,4; SEQ_BERT=16,40; SEQ_LONG=16,40; WEIGHTS=
  MODELS="tiny-bert tiny-modernbert"; CORPUS=24; CORPUS_BATCH=8; THREADS=2; VARIANTS="polyglot=fp32+int8"; CHECKED=int8
fi
SLUG=$(echo "$GPU" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/-*$//')
LOG="$OUT/cuda-check-$SLUG.log"
mkdir -p "$OUT" "$WORK"
exec > >(tee -a "$LOG") 2>&1
step "GPU: $GPU; provider $PROVIDER; models $MODELS; $("$PY" -c 'import torch, onnxruntime; print("torch", torch.__version__, "onnxruntime", onnxruntime.__version__)')"

step "CUDA tests (pytest -m cuda; they skip with a reason where the provider is missing)"
# only the files that hold CUDA tests: the others import the serving stack, which a bare GPU image may lack
"$PY" -m pytest -q -m cuda -p no:cacheprovider $(grep -l "mark.cuda" tests/test_*.py) 2>&1 | tail -15 \
  || failed "CUDA tests"

for model in $MODELS; do
  case "$model" in *mmbert*|*modernbert*) SEQ=$SEQ_LONG ;; *) SEQ=$SEQ_BERT ;; esac
  name=$model-$PROVIDER-$SLUG
  step "bench $model: torch, ORT optimizer, $VARIANTS on $PROVIDER; batch $BATCH, seq $SEQ, corpus $CORPUS"
  "$PY" -m polyglot_onnx bench "$model" $WEIGHTS --provider "$PROVIDER" --threads "$THREADS" \
    --contenders torch,ortopt,polyglot --variants "$VARIANTS" --tasks fill-mask,embed \
    --batch "$BATCH" --seq "$SEQ" --corpus-size "$CORPUS" --corpus-batch "$CORPUS_BATCH" --document-seq "" \
    --iters 5 --max-iters 30 --budget 1 --memory-limit 40 \
    --out "$OUT/bench/$name" --work "$WORK" \
    || failed "bench $model"
  package=$(ls -d "$WORK"/packages/*/ 2>/dev/null | grep -v -- '-dense/$' | grep -F "/${model}" | head -1 || true)
  if [ -n "$package" ]; then
    step "drift of $CHECKED on $PROVIDER against fp32 on the CPU: $model"
    mkdir -p "$OUT/drift/$name"
    # the Markdown report carries a plot: only where matplotlib is installed (the JSON has every figure)
    MARKDOWN=""; "$PY" -c "import matplotlib" 2>/dev/null && MARKDOWN="--markdown $OUT/drift/$name/drift.md"
    "$PY" -m polyglot_onnx drift "$package" --provider "$PROVIDER" --variants "$CHECKED" --threads "$THREADS" \
      --json "$OUT/drift/$name/drift.json" $MARKDOWN --quiet \
      || failed "drift $model (gate or error)"
  else
    failed "drift $model (no package under $WORK/packages)"
  fi
done
step "done: results under $OUT (bench/, drift/), log $LOG"
if [ ${#FAILED[@]} -gt 0 ]; then
  step "failed steps: ${FAILED[*]}"
  exit 1
fi
