"""One benchmark measurement in its own process: `python -m znnx.bench.worker JOB.json`.

A separate process per (net, runtime, patch) makes the peak resident memory that runtime's own,
isolates thread settings, and keeps one runtime's crash from ending the run. The job's result is
written as JSON next to the job file; the output array is saved for the error comparison.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from znnx.ir import Node
from znnx.plan.algorithm import DIRECT, Algorithm

if TYPE_CHECKING:
    import torch


def bench_input(patch: tuple[int, ...], channels: int = 1, seed: int = 0) -> np.ndarray:
    """The shared input of every runtime: uniform noise in [0, 1), shaped (1, channels, *patch)."""
    return np.random.default_rng(seed).random((1, channels, *patch), dtype=np.float32)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(job: dict) -> dict:
    import torch

    from znnx.bench.models import NETS
    from znnx.bench.peers import PEERS, Target

    torch.set_num_threads(int(job["threads"]))
    torch.manual_seed(0)
    net = NETS[job["net"]]
    x = bench_input(tuple(job["patch"]), net.channels)
    model = net.build(bool(job["tiny"]), tuple(job["patch"]))
    start = time.perf_counter()
    run = PEERS[job["peer"]].prepare(model, x, Target(job.get("device", "cpu"), job.get("precision", "fp32")))
    out = run(x)
    first = time.perf_counter() - start
    for _ in range(int(job["warmup"])):
        run(x)
    times = []
    for _ in range(int(job["reps"])):
        start = time.perf_counter()
        out = run(x)
        times.append(time.perf_counter() - start)
    np.save(job["output"], out)
    result = {"ok": True, "times": times, "median_s": float(np.median(times)), "prepare_s": first,
              "output_shape": list(out.shape), "peak_rss_mib": peak_rss_mib()}
    if torch.cuda.is_initialized():
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    if job.get("profile") and job["peer"] == "znnx" and (job.get("device", "cpu"), job.get("precision", "fp32")) \
            == ("cpu", "fp32"):
        result["layers"] = profile_layers(model, x)
    return result


def profile_layers(model: torch.nn.Module, x: np.ndarray) -> list[dict]:
    """Per-node times of the fused CPU execution of the znnx net (the median of three timed passes)."""
    import torch

    import znnx
    from znnx.backends import cpu
    from znnx.bench.models import load_graph
    from znnx.report import node_flops

    net = znnx.compile(load_graph(model, x))
    algorithms = net.plan.algorithms
    with torch.inference_mode():
        timings = cpu.profile(net.plan, [torch.from_numpy(x)])
    return [{"node": node.name, "op": "+".join((node.op, *node.attrs.get("epilogue", ()))),
             "algorithm": _algorithm(node, algorithms), "seconds": seconds, "flops": node_flops(net.graph, node)}
            for node, seconds in timings]


def _algorithm(node: Node, algorithms: dict[str, Algorithm]) -> str:
    """How the per-layer table names a node's kernel: oneDNN direct, Winograd F(m, r) or FFT."""
    from znnx.backends import cpu

    if cpu.shuffles(node):
        return "GEMM + shuffle"
    if cpu.overlaps(node):
        return "GEMM + scatter"
    if not node.op.startswith("conv"):
        return ""
    algorithm = algorithms.get(node.name, DIRECT)
    if algorithm.kind == "winograd":
        return f"Winograd F({algorithm.tile},{max(node.attrs['kernel'])})"
    return {"direct": "oneDNN direct", "implicit": "implicit GEMM", "scatter": "GEMM + scatter",
            "fft": "FFT"}[algorithm.kind]


def main(path: str) -> int:
    job_path = Path(path)
    job = json.loads(job_path.read_text())
    try:
        result = measure(job)
    except Exception as error:  # a runtime's failure is a row in the report, not a crash of the run
        result = {"ok": False, "error": f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}",
                  "trace": traceback.format_exc()[-2000:], "peak_rss_mib": peak_rss_mib()}
    job_path.with_suffix(".result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
