"""Per-layer benchmark: one 3x3x3 same-padded conv (C in = C out) per width, every znnx algorithm
against PyTorch's oneDNN direct conv on channels-last input, in one run.

    python -m znnx.bench.layers [--threads 2] [--reps 5] [--out benchmarks/results-layers]

Each (layer, runtime) runs in its own spawned process (same threads, same seeded input and
weights), so its peak RSS is its own: one warm-up call, then the median of `reps` calls. Errors are
max |y - y_64| / max |y_64| against a float64 conv of the same input. "znnx best" is the
algorithm the autotuner picks for the layer (its own timing, in the parent process).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
from pathlib import Path
from typing import Any

LAYERS = ((16, 96), (32, 80), (64, 64), (128, 48))
RUNTIMES = ("pytorch-channels-last", "direct", "winograd2", "winograd4", "fft")
TARGETS = {16: 1.0, 32: 1.2, 64: 1.6, 128: 2.0}


def _tensors(channels: int, size: int) -> tuple[Any, Any, Any]:
    import torch

    generator = torch.Generator().manual_seed(channels)
    x = torch.rand((1, channels, size, size, size), generator=generator)
    w = (torch.rand((channels, channels, 3, 3, 3), generator=generator) - 0.5) / (27 * channels) ** 0.5
    b = torch.rand(channels, generator=generator) - 0.5
    return x, w, b


def _worker(job: dict[str, Any], queue: Any) -> None:
    import torch
    import torch.nn.functional as F

    from znnx.volume.progress import peak_rss_bytes

    torch.set_num_threads(job["threads"])
    x, w, b = _tensors(job["channels"], job["size"])
    x = x.contiguous(memory_format=torch.channels_last_3d)
    if job["runtime"] == "pytorch-channels-last":
        w_last = w.contiguous(memory_format=torch.channels_last_3d)
        run = lambda: F.conv3d(x, w_last, b, padding=1)
    else:
        from znnx.backends import cpu
        from znnx.plan.algorithm import by_name

        graph = _graph(w, b, job["size"])
        node = graph.nodes[0]
        algorithm = by_name(job["runtime"], cpu.conv_candidates(graph, node, cpu.precision("fp32")))
        assert algorithm is not None, f"{job['runtime']} applies to every 3x3x3 layer"
        kernel = cpu.conv_kernel(graph, node, algorithm)
        run = lambda: kernel(x)
    with torch.inference_mode():
        y = run()
        times = []
        for _ in range(job["reps"]):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        peak = peak_rss_bytes() / 2**20
        reference = F.conv3d(x.double(), w.double(), b.double(), padding=1)
        error = float((y.double() - reference).abs().max() / reference.abs().max())
    queue.put({**job, "seconds": statistics.median(times), "error": error, "peak_rss_mib": peak})


def measure(job: dict[str, Any]) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_worker, args=(job, queue))
    process.start()
    result = queue.get()
    process.join()
    return dict(result)


def _graph(w: Any, b: Any, size: int) -> Any:
    """The layer as a one-conv graph with weights `w` and bias `b`."""
    from znnx.frontends.builder import GraphBuilder

    builder = GraphBuilder("layer", 3)
    name = builder.add_input("x", int(w.shape[1]), (size,) * 3)
    attrs = {"kernel": (3, 3, 3), "stride": (1, 1, 1), "dilation": (1, 1, 1), "pads": (1,) * 6, "groups": 1}
    return builder.finish([builder.add("conv", [name], attrs, {"weight": w.numpy(), "bias": b.numpy()})])


def autotuned(channels: int, size: int, threads: int) -> str:
    """The algorithm the autotuner picks for the layer (measured here or read from its cache)."""
    import torch

    from znnx.backends import cpu

    torch.set_num_threads(threads)
    _, w, b = _tensors(channels, size)
    fp32 = cpu.precision("fp32")
    return cpu.choose_algorithms(_graph(w, b, size), 1, torch.device("cpu"), fp32, None)[0].algorithm.name


def table(results: list[dict[str, Any]], chosen: dict[int, str]) -> list[str]:
    lines = ["| C | spatial | runtime | ms (median) | output Mvox/s | vs PyTorch | rel. error vs f64 | peak RSS MiB |",
             "|---:|---|---|---:|---:|---:|---:|---:|"]
    summary = ["| C | spatial | PyTorch oneDNN ms | autotuned algorithm | znnx ms | speedup | target |",
               "|---:|---|---:|---|---:|---:|---:|"]
    for channels, size in LAYERS:
        rows = [r for r in results if r["channels"] == channels]
        base = next(r for r in rows if r["runtime"] == "pytorch-channels-last")["seconds"]
        for r in rows:
            lines.append(f"| {channels} | {size}^3 | {r['runtime']} | {r['seconds'] * 1e3:,.1f} | "
                         f"{size ** 3 / r['seconds'] / 1e6:,.2f} | {base / r['seconds']:.2f}x | {r['error']:.1e} | "
                         f"{r['peak_rss_mib']:,.0f} |")
        best = next(r for r in rows if r["runtime"] == chosen[channels])
        summary.append(f"| {channels} | {size}^3 | {base * 1e3:,.1f} | {chosen[channels]} | "
                       f"{best['seconds'] * 1e3:,.1f} | {base / best['seconds']:.2f}x | {TARGETS[channels]:.1f}x |")
    return [*summary, "", *lines]


def main(argv: list[str] | None = None) -> int:
    from znnx.bench.machine import describe

    parser = argparse.ArgumentParser(prog="python -m znnx.bench.layers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results-layers"))
    args = parser.parse_args(argv)
    results = []
    for channels, size in LAYERS:
        for runtime in RUNTIMES:
            job = {"channels": channels, "size": size, "runtime": runtime, "threads": args.threads, "reps": args.reps}
            results.append(measure(job))
            print(json.dumps(results[-1]), flush=True)
    chosen = {channels: autotuned(channels, size, args.threads) for channels, size in LAYERS}
    machine = describe()
    lines = ["# Per-layer benchmark: 3x3x3 same conv, C in = C out", "",
             f"Command: `python -m znnx.bench.layers --threads {args.threads} --reps {args.reps}`", "",
             "| machine | |", "|---|---|", *(f"| {k} | {v} |" for k, v in machine.items()), "",
             *table(results, chosen)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    (args.out / "results.json").write_text(json.dumps({"machine": machine, "results": results, "chosen": chosen},
                                                      indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
