#!/usr/bin/env bash
# Train the demo U-Net (scripts/make_demo_model.py) with `znnx train` on the synthetic EM volume
# (`znnx synth`), reproducibly (fixed seeds, 2 threads), and install the trained net as
# src/znnx/data/demo_unet.onnx for `znnx demo`. Takes about 10 minutes on 2 cores.
# Usage: bash scripts/train_demo.sh [WORK_DIR]   (default: demo-training)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-demo-training}
mkdir -p "$work"
python scripts/make_demo_model.py "$work/untrained.onnx"
znnx synth "$work/data.zarr" --shape 96,96,96 --spacing 12 --seed 0
znnx train "$work/untrained.onnx" --image "$work/data.zarr/raw" --labels "$work/data.zarr/labels" \
    --target boundary --patch 32,32,32 --input-shape 1,32,32,32 --init msra --steps 3000 --lr 2e-3 \
    --schedule cosine --validation 0.34 --validate-every 500 --checkpoint-every 500 --seed 0 --threads 2 \
    --out "$work/run"
cp "$work/run/net.onnx" src/znnx/data/demo_unet.onnx
echo "installed $work/run/net.onnx as src/znnx/data/demo_unet.onnx; curves: $work/run/curves.png"
