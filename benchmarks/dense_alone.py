"""znnx alone on one of the dense benchmark nets at one patch, for nets whose PyTorch reference run
(which `python -m znnx.bench.dense` always makes) takes too long: n926's dilated PyTorch net takes
about 18 minutes a 222^3 patch on a 2-core machine.

    python benchmarks/dense_alone.py n926 [--size 222] [--threads 2]

Compiles the net's dense form (auto: the fragments settle it from their layers or each form runs a
patch), runs one warm-up patch and one timed patch on the bench's input, and prints the compile
seconds, the patch seconds, output voxels/s (and per core), the dense choice and the peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

import znnx
from znnx.bench.models import DENSE_NETS
from znnx.bench.worker import bench_input


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("net", choices=sorted(DENSE_NETS))
    parser.add_argument("--size", type=int, help="cube patch edge (default: the net's standard patch)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = DENSE_NETS[args.net]
    patch = (args.size,) * 3 if args.size else spec.patch
    model = spec.build(False, patch)
    x = bench_input(patch, spec.channels)
    graph = znnx.load(model.classifier(), input_shape=x.shape[1:])
    start = time.perf_counter()
    net = znnx.compile(graph, patch=patch, dense=True)
    compile_s = time.perf_counter() - start
    net(x)
    start = time.perf_counter()
    y = net(x)
    run_s = time.perf_counter() - start
    voxels = int(np.prod(y.shape[2:]))
    choice = net.plan.dense.summary() if net.plan.dense else "-"
    print(f"{args.net} patch {'x'.join(map(str, patch))} -> {'x'.join(map(str, y.shape[2:]))}: compile "
          f"{compile_s:.0f} s, one patch {run_s:.1f} s, {voxels / run_s:,.0f} output voxels/s "
          f"({voxels / run_s / args.threads:,.0f} per core); {choice}; peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
