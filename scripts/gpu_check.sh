#!/usr/bin/env bash
# Every GPU check of issue 22 in one run of at most 9 minutes on an H200, one results folder.
#
#   bash scripts/gpu_wheels.sh          # once, where PyPI is reachable: zarr & codecs into .whl/
#   bash scripts/gpu_check.sh           # on the GPU host, from the repository root (.whl/ beside it)
#
# Results go to $OUT (default gpu-results/), at most 8 files: tests.txt (the CUDA tests),
# bench-fp16.txt, bench-bf16.txt, bench-fp32.txt (eager, channels-last, torch.compile plain and
# channels-last, znnx on the three U-Nets, with peak GPU memory; each file holds the per-runtime log
# and the table), volume.txt (512^3 uint8 zarr end to end at the automatic patch against the net in
# memory), hybrid.txt (cuda against cuda,cpu), pipeline.txt (the storage ceiling) and env.txt.
# Each step has its own time limit, so the whole stays within 9 minutes; a step cut short leaves
# its log. DEVICE=cpu TINY=1 runs the same steps on the CPU with tiny nets (a check of the script).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-results}
device=${DEVICE:-cuda}
tiny=${TINY:-}
work=$(mktemp -d)
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

if ! python3 -c "import zarr" 2>/dev/null; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/znnx-site \
      .whl/*.whl && export PYTHONPATH="/tmp/znnx-site:$PYTHONPATH"
  else
    echo "gpu_check: zarr is missing and .whl/ holds no wheels; run scripts/gpu_wheels.sh where PyPI is reachable" \
      | tee "$out/env.txt"
    exit 1
  fi
fi

{ date; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | head -3
  python3 -c "import torch, zarr; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn',
torch.backends.cudnn.version(), 'zarr', zarr.__version__, 'gpu', torch.cuda.is_available())"; } > "$out/env.txt" 2>&1

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $out/NAME.txt
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit} s): $*" | tee "$out/$name.txt"
  local began=$SECONDS
  timeout --kill-after=5 "$limit" "$@" >> "$out/$name.txt" 2>&1
  echo "== $name: exit $?, $((SECONDS - began)) s" | tee -a "$out/$name.txt"
}

size=512; nets=symmetric,residual,original; reps=5; threads=$(nproc)
if [ -n "$tiny" ]; then size=64; reps=1; threads=2; fi
tinyflag=${tiny:+--tiny}

step tests 60 python3 -m pytest -q -x -p no:cacheprovider tests/backends/test_cuda.py tests/test_net.py \
  tests/test_op_coverage.py -k "cuda or gpu"
for precision in fp16 bf16 fp32; do
  case $precision in
    fp16) limit=170; peers=pytorch-eager,pytorch-channels-last,torch.compile,torch.compile-channels-last,znnx ;;
    bf16) limit=130; peers=pytorch-eager,pytorch-channels-last,torch.compile-channels-last,znnx ;;
    fp32) limit=50; peers=pytorch-eager,pytorch-channels-last,znnx ;;
  esac
  [ "$device" = cpu ] && peers=pytorch-eager,znnx && [ "$precision" != fp32 ] && continue
  step "bench-$precision" "$limit" python3 -m znnx bench --device "$device" --precision "$precision" --nets "$nets" \
    --peers "$peers" --warmup 2 --reps "$reps" --threads "$threads" $tinyflag --out "$work/bench-$precision"
  cat "$work/bench-$precision/results.md" >> "$out/bench-$precision.txt" 2>/dev/null
done
precision=fp16; [ "$device" = cpu ] && precision=fp32
step volume 60 python3 -m znnx.bench.volume --device "$device" --precision "$precision" --patch auto \
  --size "$size" --threads "$threads" --skip-monai $tinyflag --out "$work/volume"
step hybrid 45 python3 -m znnx.bench.hybrid --devices "$device" "$device,cpu" --precision "$precision" \
  --size "$((size / 2))" --threads "$threads" $tinyflag --out "$work/hybrid"
cat "$work/hybrid/results.md" >> "$out/hybrid.txt" 2>/dev/null
step pipeline 25 python3 -m znnx.bench.pipeline --size "$size" --threads "$threads" --reps 3 --out "$work/pipeline"
rm -rf "$work"
ls -la "$out"
