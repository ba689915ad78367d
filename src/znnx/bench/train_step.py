"""Training-step throughput: one full step (forward, backward, Adam update) of a benchmark U-Net,
znnx's training module (its measured forward / input-gradient algorithms) against PyTorch eager
(channels-last) and torch.compile of the same module, same patch, batch and threads, one after
the other, each in its own process; output voxels trained per second (median of the timed steps)
and the peak RSS of that process.

    python -m znnx.bench.train_step [--nets symmetric residual] [--patch NET=D,H,W] [--steps 5]
                                    [--threads N] [--peers znnx eager torch.compile]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from znnx.volume.progress import peak_rss_bytes

PATCHES = {"symmetric": (32, 64, 64), "residual": (12, 128, 128)}
PEERS = ("znnx", "eager", "torch.compile")


def _step_fn(peer: str, name: str, patch: tuple[int, ...]) -> tuple[Callable[[], float], tuple[int, ...]]:
    import znnx
    from znnx.bench.models import NETS
    from znnx.training.conv import choose
    from znnx.training.module import TrainableNet, training_graph, without_final_activation

    torch.manual_seed(0)
    module = NETS[name].build(False, patch).train()
    x = torch.rand(1, 1, *patch)
    if peer == "znnx":
        graph = without_final_activation(training_graph(znnx.load(module.eval(), input_shape=(1, *patch))))
        net: torch.nn.Module = TrainableNet(graph, choose(graph, 1).algorithms()).train()
    else:
        net = module.train().to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
        x = x.contiguous(memory_format=torch.channels_last_3d)
        if peer == "torch.compile":
            net = torch.compile(net)  # type: ignore[assignment]
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    out_shape = tuple(net(x).shape)
    target = torch.rand(out_shape)

    def step() -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(net(x), target)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    return step, out_shape


def _one(name: str, peer: str, patch: tuple[int, ...], steps: int, threads: int) -> dict[str, float]:
    """One runner measured in this process: seconds per step and output voxels per step."""
    torch.set_num_threads(threads)
    step, shape = _step_fn(peer, name, patch)
    for _ in range(2):
        step()
    seconds = statistics.median(step() for _ in range(steps))
    voxels = shape[0] * shape[2] * shape[3] * shape[4]
    return {"seconds": seconds, "voxels": voxels, "rss_mib": peak_rss_bytes() / (1 << 20)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m znnx.bench.train_step")
    parser.add_argument("--nets", nargs="+", default=list(PATCHES))
    parser.add_argument("--peers", nargs="+", default=list(PEERS))
    parser.add_argument("--patch", action="append", default=[], metavar="NET=D,H,W")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--one", nargs=2, metavar=("NET", "PEER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    patches: dict[str, tuple[int, ...]] = dict(PATCHES)
    for spec in args.patch:
        net, sizes = spec.split("=")
        patches[net] = tuple(int(s) for s in sizes.split(","))
    if args.one:
        print(json.dumps(_one(args.one[0], args.one[1], patches[args.one[0]], args.steps, args.threads)))
        return
    print(f"training step, {args.threads} threads, median of {args.steps} steps after 2 warm-up steps, "
          f"each runner in its own process")
    print("| net | patch | runner | s/step | output voxels/s | vs best peer | peak RSS MiB |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name in args.nets:
        rows = []
        for peer in args.peers:
            command = [sys.executable, "-m", "znnx.bench.train_step", "--one", name, peer, "--steps", str(args.steps),
                       "--threads", str(args.threads), *(f"--patch={p}" for p in args.patch)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append((peer, result["seconds"], result["voxels"] / result["seconds"], result["rss_mib"]))
        best = max((r[2] for r in rows if r[0] != "znnx"), default=0.0)
        for peer, seconds, rate, rss in rows:
            ratio = f"{rate / best:.2f}x" if peer == "znnx" and best else ""
            print(f"| {name} | {'x'.join(map(str, patches[name]))} | {peer} | {seconds:.3f} | {rate:,.0f} | {ratio} | "
                  f"{rss:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
