#!/bin/bash
# Issue 16's GPU checks in one go, for a machine with a CUDA GPU and PyTorch already installed (the
# project itself is run from src/, its Python dependencies from that machine's environment, which
# must hold simplejpeg for the JPEG decoding of `evaluate`, and timm for the peer rows):
#
#   OUT=results W=path/to/tf_mobilenet_v1_1.0_224.safetensors DATA=path/to/val/labels.csv \
#       bash benchmarks/gpu_checks.sh
#
# W: weights for the agreement and accuracy checks (`mobilenet pretrained` names them; a file works
# offline). DATA: the 1,000 evaluation images of imagenet-val1300 (its labels.csv). Each step has
# its own time limit (T_*), so that one that hangs or crashes leaves the others their time; what each
# step printed lands in $OUT. The project's first GPU run (H200, 2026-12-04) is in docs/pytorch.md
# and docs/training.md.
set -u
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to a folder for the results}" "${W:?set W to weights}" "${DATA:?set DATA to labels.csv}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
L=$OUT/log.txt
step() { echo "=== $(date -u +%T) $*" >> "$L"; }
step env
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda,
torch.cuda.get_device_name(0), 'native bf16', torch.cuda.is_bf16_supported(including_emulation=False))"; } >> "$L" 2>&1
step "the tests marked cuda"
timeout "${T_TEST:-420}" python3 -m pytest -p no:cacheprovider -m cuda -rA --continue-on-collection-errors tests > "$OUT/pytest_cuda.txt" 2>&1
step "pytest rc $?"
step "bench --train --device cuda"
timeout "${T_TRAIN:-240}" python3 -m mobilenet bench --train --device cuda --batch-size "${TRAIN_BATCH:-256}" \
  --seconds 2 --save "$OUT/train_cuda.json" >> "$L" 2>&1
step "train rc $?"
step "bench --device cuda"
timeout "${T_INFER:-300}" python3 -m mobilenet bench --device cuda --weights "$W" --save "$OUT/inference_cuda.json" \
  >> "$L" 2>&1
step "inference rc $?"
step "bench --device cuda again: a second process on the same caches"
timeout "${T_WARM:-120}" python3 -m mobilenet bench --device cuda --weights "$W" --precision bf16 --batch-size 1 \
  --no-peers --seconds 0.2 --save "$OUT/inference_cuda_second_process.json" >> "$L" 2>&1
step "second process rc $?"
step "evaluate --device cuda"
timeout "${T_EVAL:-180}" python3 -m mobilenet evaluate --data "$DATA" --weights "$W" --device cuda \
  --precision "${EVAL_PRECISION:-bf16}" --batch-size 100 --workers 8 --json > "$OUT/evaluate_cuda.json" 2>> "$L"
step "evaluate rc $?"
step "classify --device cuda"
timeout "${T_CLASSIFY:-120}" python3 -m mobilenet classify --weights "$W" --device cuda --precision fp16 >> "$L" 2>&1
step "classify rc $?"
