#!/usr/bin/env bash
# Fetch, on a machine that reaches PyPI, the wheels a GPU host may lack for scripts/gpu_check.sh:
# zarr and its codecs (the H200 image has numpy, torch, onnx, safetensors, h5py, tifffile, pyyaml,
# but no zarr). They land in .whl/ (git-ignored); gpu_check.sh installs them from there, offline.
#   bash scripts/gpu_wheels.sh            # CPython 3.12, manylinux x86-64 (the H200 image's Python)
#   PY=3.11 bash scripts/gpu_wheels.sh    # another Python
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PY:-3.12}
mkdir -p .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
for wheel in zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
    "${platforms[@]}" -d .whl "$wheel"
done
ls -la .whl
