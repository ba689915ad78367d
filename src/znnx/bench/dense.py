"""Dense (sliding-window) benchmark: ZNNi's four nets and ZNN's N4 at every voxel, beside ZNNi's figures.

    python -m znnx.bench.dense [--nets n337 n537 n726 n926 n4] [--rounds 1] [--reps 3] [--tiny]
                               [--patch NET=D,H,W ...] [--peers ...] [--out benchmarks/results-dense]

Every (net, runtime) runs in its own worker process (bench/runner.py: peak RSS is that runtime's),
on the same input and thread count, runtimes taking turns per round. Runtimes: znnx (the autotuner
chooses dilated or max-pooling fragments and each layer's algorithm), znnx with the dilated form
forced, and PyTorch's straightforward dense net (stride-1 pools, dilated convolutions,
bench/sliding.py) eager, channels-last and under torch.compile. Throughput is output voxels per
second of one patch (median of the timed runs); errors are relative to PyTorch eager. ZNNi's figures
(SC16, Table V) are output voxels/s on a 72-core Xeon E7-8890 v3 machine; "per core" divides by
the cores each run used. Writes `dense.md` and `dense.json` to `--out`.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from znnx.bench.runner import Measurement, Settings, measure
from znnx.bench.sliding import ZNNI_CORES, ZNNI_CPU, ZNNI_CPU_GPU, ZNNI_GPU

PEERS = ("znnx", "znnx-dilated", "pytorch-channels-last", "torch.compile")
PYTORCH = ("pytorch-eager", "pytorch-channels-last", "torch.compile")


def _rate(m: Measurement | None) -> float:
    return m.voxels_per_s if m is not None and m.ok else math.nan


def _cell(value: float, digits: int = 0) -> str:
    return "-" if math.isnan(value) else f"{value:,.{digits}f}"


def table(results: list[Measurement], threads: int) -> tuple[str, list[dict[str, Any]]]:
    """The markdown table and its rows as JSON."""
    by = {(m.net, m.peer): m for m in results}
    nets = list(dict.fromkeys(m.net for m in results))
    header = ("| net | patch -> output | znnx | znnx dilated | PyTorch eager | channels-last | torch.compile | "
              "znnx / best PyTorch | znnx per core | ZNNi per core (72 cores) | per core ratio | "
              "peak RSS MiB znnx / best PyTorch |")
    lines = [header, "|---|---|" + "---:|" * 10]
    rows = []
    for net in nets:
        znnx = by.get((net, "znnx"))
        best_peer = max((p for p in PYTORCH if (net, p) in by and by[(net, p)].ok), key=lambda p: _rate(by[(net, p)]),
                        default=None)
        best = _rate(by[(net, best_peer)]) if best_peer else math.nan
        ours = _rate(znnx)
        znni = ZNNI_CPU.get(net)
        per_core = ours / threads
        znni_core = znni / ZNNI_CORES if znni else math.nan
        patch = znnx.patch if znnx else next(m.patch for m in results if m.net == net)
        out = znnx.output_shape[2:] if znnx and znnx.ok else ()
        rss = f"{_cell(znnx.peak_rss_mib if znnx else math.nan)} / " \
              f"{_cell(by[(net, best_peer)].peak_rss_mib) if best_peer else '-'}"
        rates = " | ".join(_cell(_rate(by.get((net, p)))) for p in ("znnx-dilated", *PYTORCH))
        lines.append(f"| {net} | {'x'.join(map(str, patch))} -> {'x'.join(map(str, out))} | {_cell(ours)} | "
                     f"{rates} | {_cell(ours / best, 2)}x | {_cell(per_core)} | {_cell(znni_core)} | "
                     f"{_cell(per_core / znni_core, 1)}x | {rss} |")
        rows.append({"net": net, "patch": list(patch), "output": list(out), "threads": threads,
                     "voxels_per_s": {m.peer: _rate(m) for m in results if m.net == net},
                     "peak_rss_mib": {m.peer: m.peak_rss_mib for m in results if m.net == net},
                     "max_rel_error": {m.peer: m.max_rel_error for m in results if m.net == net},
                     "errors": {m.peer: m.error for m in results if m.net == net and not m.ok},
                     "best_pytorch": best_peer, "znnx_over_best_pytorch": ours / best,
                     "znni_cpu": znni, "znni_gpu": ZNNI_GPU.get(net), "znni_cpu_gpu": ZNNI_CPU_GPU.get(net),
                     "per_core_over_znni": per_core / znni_core})
    return "\n".join(lines), rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m znnx.bench.dense", description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", nargs="+", default=["n337", "n537", "n726", "n926", "n4"])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peers", nargs="+", default=list(PEERS), help=f"runtimes beside PyTorch eager (default "
                                                                         f"{' '.join(PEERS)})")
    parser.add_argument("--tiny", action="store_true", help="narrow nets and small patches (a smoke test)")
    parser.add_argument("--patch", nargs="*", default=[], metavar="NET=D,H,W")
    parser.add_argument("--out", default="benchmarks/results-dense")
    args = parser.parse_args(argv)
    patches = {k: tuple(int(v) for v in s.split(",")) for k, s in (p.split("=", 1) for p in args.patch)}
    settings = Settings(threads=args.threads, warmup=1, reps=args.reps, tiny=args.tiny, rounds=args.rounds)
    results = measure(args.nets, args.peers, settings, patches)
    text, rows = table(results, args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dense.md").write_text(text + "\n")
    (out / "dense.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
