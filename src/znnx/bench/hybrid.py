"""Hybrid benchmark: one volume run per device list, side by side (ZNNi's CPU + GPU question).

    python -m znnx.bench.hybrid --devices cuda cuda,cpu [--precision fp16] [--net symmetric] [--size 256]

Each device list runs the nets `infer_volume` would (`device_nets`: `--patch auto` per device, each
within its own memory) in exact mode on the same uint8 zarr volume, in one process, the lists in the
order given, each timed on its second run of the same nets (autotuning, CUDA graph capture and
cuDNN's algorithm search happen in the first). The table gives output voxels/s, the ratio to the
first device list, the blocks each device computed and peak RSS; outputs are checked equal to the
first run's (the runs are exact). Progress goes to stderr: each step as it starts (building the
nets, the warm-up run, the timed run) and the runs' own progress lines. Without a GPU, `--devices
cpu cpu,cpu` exercises the same path (two CPU nets share the same cores, so expect no gain).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from znnx.bench.models import NETS
from znnx.bench.volume import make_volume


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    import zarr

    import znnx
    from znnx.volume import Placement, VolumeOptions, device_nets
    from znnx.volume.runner import run_volume

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", nargs="+", default=["cpu", "cpu,cpu"],
                        help="device lists to compare, the first is the baseline (default: cpu cpu,cpu)")
    parser.add_argument("--precision", default="fp32", help="every device's precision (default fp32)")
    parser.add_argument("--net", default="symmetric", choices=sorted(NETS))
    parser.add_argument("--size", type=int, default=256, help="edge of the cubic uint8 volume (default 256)")
    parser.add_argument("--threads", type=int, default=2, help="CPU compute threads")
    parser.add_argument("--memory", help="memory budget per device for the automatic patch (default: 80%% of the "
                        "free RAM, half a GPU's free memory)")
    parser.add_argument("--tiny", action="store_true", help="narrow net (smoke test)")
    parser.add_argument("--out", default="benchmarks/results-hybrid")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = NETS[args.net]
    torch.manual_seed(0)
    patch = spec.tiny_patch if args.tiny else spec.patch
    graph = znnx.load(spec.build(args.tiny, patch).eval(), input_shape=(1, *patch))
    from znnx.units import parse_bytes

    memory = parse_bytes(args.memory) if args.memory else None
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        source = make_volume(work / "in.zarr", args.size)
        options = VolumeOptions(scale=1 / 255, overwrite=True)
        for i, devices in enumerate(args.devices):
            target = str(work / f"out{i}.zarr/pred")
            step = f"hybrid [{i + 1}/{len(args.devices)}] {devices}"
            began = time.perf_counter()
            say(f"{step}: building the nets (automatic patch per device, tuning)")
            net, helpers, _ = device_nets(graph, source, target, options,
                                          Placement("auto", memory, devices, args.precision))
            say(f"{step}: nets ready in {time.perf_counter() - began:.0f} s, patch "
                f"{', '.join('x'.join(map(str, n.input_shape[1:])) for n in (net, *helpers))}")
            for run in ("warm-up run", "timed run"):  # the first warms the same nets the second one times
                say(f"{step}: {run}")
                summary = run_volume(net, source, target, options, quiet=False, stream=sys.stderr, helpers=helpers)
            say(f"{step}: {summary.voxels_per_s:,.0f} output voxels/s")
            blocks = [f"{d['device']} ({'x'.join(map(str, d['patch']))}): {d['blocks']}" for d in summary.devices]
            rows.append({"devices": devices, "voxels_per_s": summary.voxels_per_s, "seconds": summary.seconds,
                         "peak_rss_mib": summary.peak_rss_mib,
                         "blocks": blocks or [f"{devices} ({'x'.join(map(str, summary.patch))}): {summary.computed}"]})
        first = np.asarray(zarr.open_array(str(work / "out0.zarr"), path="pred", mode="r")[...])
        for i, row in enumerate(rows):
            other = np.asarray(zarr.open_array(str(work / f"out{i}.zarr"), path="pred", mode="r")[...])
            row["max_difference"] = float(np.abs(other - first).max())
    base = rows[0]["voxels_per_s"]
    lines = [f"# Hybrid benchmark: {args.net} net, {args.size}^3 uint8 zarr, {args.precision}, {args.threads} CPU "
             f"threads", "", "| devices | output voxels/s | vs first | seconds | blocks per device (patch) | "
             "max diff vs first | peak RSS MiB |", "|---|---:|---:|---:|---|---:|---:|"]
    for row in rows:
        per_device = ", ".join(row["blocks"])
        lines.append(f"| {row['devices']} | {row['voxels_per_s']:,.0f} | {row['voxels_per_s'] / base:.2f}x | "
                     f"{row['seconds']:.2f} | {per_device} | {row['max_difference']:.1e} | "
                     f"{row['peak_rss_mib']:,.0f} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
