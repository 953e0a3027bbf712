#!/bin/sh
# The measurements behind docs/performance.md: run from the project root, on a machine as quiet as
# you can get (the load average is recorded in every report, and so are the CPU model, its ISA
# level and its int8/bf16 facts). Takes about 15 minutes on 2 cores. Nothing is downloaded except
# the default weights (once, from PyPI, then cached).
#
#   sh benchmarks/bench_deploy.sh [OUTDIR]      (default docs/bench)
#
# Needs ../shared/assets (TF's .tflite peers, ImageNet images for int8 calibration and accuracy).
set -eu
OUT=${1:-docs/bench}
ASSETS=../shared/assets
mkdir -p "$OUT"

# int8 calibrates on the first 300 validation files by name and never sees the other 1,000.
CALIBRATION=$(mktemp -d)
trap 'rm -rf "$CALIBRATION"' EXIT
ls "$ASSETS/imagenet-val1300/images" | sort | head -300 | while read -r f; do
    ln -s "$(pwd)/$ASSETS/imagenet-val1300/images/$f" "$CALIBRATION/$f"
done

uptime | tee "$OUT/load.txt"
.venv/bin/python -c "from mobilenet.cpu import cpu_info; print(cpu_info().summary())" | tee "$OUT/cpu.txt"

# MobileNet 1.0-224, every runtime and precision, batch 1 and 32, with timm and TF's uint8 .tflite as peers.
.venv/bin/mobilenet bench --weights tf_mobilenet_v1_1.0_224 \
    --runtime torch onnxruntime openvino litert executorch auto --precision fp32 bf16 int8 --batch-size 1 32 --threads 2 \
    --calibration "$CALIBRATION" --tflite-dir "$ASSETS/tflite" \
    --save "$OUT/mobilenet_1.0_224.json" --plot "$OUT/mobilenet_1.0_224.png" \
    | tee "$OUT/mobilenet_1.0_224.txt"

# The small end: 0.25-224 against TF's float (XNNPACK) and uint8 .tflite models. The weights are
# TF's own float .tflite from ../shared/assets, converted on the fly: no registry download.
.venv/bin/mobilenet bench --weights "$ASSETS/tflite/mobilenet_v1_0.25_224.tflite" \
    --runtime torch onnxruntime openvino litert executorch auto --precision fp32 int8 --batch-size 1 32 --threads 2 \
    --calibration "$CALIBRATION" --tflite-dir "$ASSETS/tflite" --no-conv \
    --save "$OUT/mobilenet_0.25_224.json" --plot "$OUT/mobilenet_0.25_224.png" \
    | tee "$OUT/mobilenet_0.25_224.txt"

# int8 accuracy against fp32 on the 1,000 evaluation images.
.venv/bin/python benchmarks/bench_int8_accuracy.py --json "$OUT/int8_accuracy.json" | tee "$OUT/int8_accuracy.md"

uptime | tee -a "$OUT/load.txt"
