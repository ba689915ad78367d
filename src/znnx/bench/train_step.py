"""Training-step throughput: one full step (forward, backward, Adam update) of a benchmark U-Net,
znnx's training module (its measured forward / input-gradient algorithms) against PyTorch eager
(channels-last) and torch.compile of the same module, same patch, batch and threads, interleaved;
output voxels trained per second (median of the timed steps) and peak RSS after each runner.

    python -m znnx.bench.train_step [--nets symmetric residual] [--patch NET=D,H,W] [--steps 5]
                                    [--threads N] [--peers znnx eager torch.compile]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable

import torch

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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m znnx.bench.train_step")
    parser.add_argument("--nets", nargs="+", default=list(PATCHES))
    parser.add_argument("--peers", nargs="+", default=list(PEERS))
    parser.add_argument("--patch", action="append", default=[], metavar="NET=D,H,W")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    patches: dict[str, tuple[int, ...]] = dict(PATCHES)
    for spec in args.patch:
        net, sizes = spec.split("=")
        patches[net] = tuple(int(s) for s in sizes.split(","))
    print(f"training step, {args.threads} threads, median of {args.steps} steps after 2 warm-up steps")
    print("| net | patch | runner | s/step | output voxels/s | vs best peer | peak RSS MiB |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name in args.nets:
        rows = []
        for peer in args.peers:
            step, shape = _step_fn(peer, name, patches[name])
            for _ in range(2):
                step()
            seconds = statistics.median(step() for _ in range(args.steps))
            voxels = shape[0] * shape[2] * shape[3] * shape[4]
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            rows.append((peer, seconds, voxels / seconds, rss))
        best = max((r[2] for r in rows if r[0] != "znnx"), default=0.0)
        for peer, seconds, rate, rss in rows:
            ratio = f"{rate / best:.2f}x" if peer == "znnx" and best else ""
            print(f"| {name} | {'x'.join(map(str, patches[name]))} | {peer} | {seconds:.3f} | {rate:,.0f} | {ratio} | "
                  f"{rss:,.0f} |")


if __name__ == "__main__":
    main()
