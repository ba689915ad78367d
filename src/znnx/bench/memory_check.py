"""Predicted vs measured memory of a compiled benchmark net, in a fresh process:
`python -m znnx.bench.memory_check NET D,H,W [--tiny]` prints one JSON line.

Measured peak growth is the process's peak resident memory during compile and the first call
(which allocates the arena and touches every buffer) minus the resident memory just before
compiling; Linux's peak counter is reset first (`/proc/self/clear_refs`). The prediction for the
same span is the plan's peak (`Net.memory_bytes()`) plus the weights oneDNN repacks at compile time.
The autotuner runs first, in a child process: its measurements (a few layer-sized tensors, once
per shape and machine) are a transient of the first compile, not of running the plan, and the
measured compile reads its choices from the on-disk cache. (Tuning in this process would leave
freed pages resident in the allocator and hide part of the measured growth.) Before the baseline is
read, the net's tiny variant is compiled and run in this process, so that what any first compile
costs once per process (the modules compile imports, the C kernels' shared libraries, the thread
pools) is not counted as the net's: against a 434 MiB prediction the full symmetric net measured
476-485 MiB without it, 462-465 with it.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
from pathlib import Path

MIB = 1 << 20


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    assert match is not None, f"/proc/self/status has no {field}"
    return int(match.group(1))


def _tune(net_name: str, patch: tuple[int, int, int], tiny: bool, threads: int) -> None:
    import torch

    import znnx
    from znnx.bench.models import NETS, load_graph
    from znnx.bench.worker import bench_input

    torch.set_num_threads(threads)
    znnx.compile(load_graph(NETS[net_name].build(tiny, patch), bench_input(patch, NETS[net_name].channels)), patch)


def measure(net_name: str, patch: tuple[int, int, int], tiny: bool, threads: int = 2) -> dict[str, float | str]:
    import multiprocessing

    import torch

    tuner = multiprocessing.get_context("spawn").Process(target=_tune, args=(net_name, patch, tiny, threads))
    tuner.start()
    tuner.join()

    import znnx
    from znnx.bench.models import NETS, load_graph
    from znnx.bench.worker import bench_input

    torch.set_num_threads(threads)
    spec = NETS[net_name]
    small = bench_input(spec.tiny_patch, spec.channels)
    znnx.compile(load_graph(spec.build(True, spec.tiny_patch), small), spec.tiny_patch)(small)
    x = bench_input(patch, spec.channels)
    graph = load_graph(spec.build(tiny, patch), x)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    net = znnx.compile(graph, patch)
    net(x)
    growth = (_status_kib("VmHWM") - before) * 1024
    predicted = net.memory_bytes() + net.weight_bytes
    return {
        "net": net_name, "patch": "x".join(map(str, patch)),
        "predicted_mib": predicted / MIB, "measured_mib": growth / MIB,
        "plan_peak_mib": net.memory_bytes() / MIB, "arena_mib": net.plan.memory.arena_bytes / MIB,
        "naive_mib": net.plan.memory.naive_bytes / MIB, "weights_mib": net.weight_bytes / MIB,
        "error": predicted / growth - 1,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("net")
    parser.add_argument("patch", type=lambda s: tuple(int(v) for v in s.split(",")))
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(measure(args.net, args.patch, args.tiny, args.threads)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
