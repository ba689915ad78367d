"""Segmentation benchmark: znnx in memory and chunk by chunk (2 local worker processes, a 2-worker
Dask cluster) against waterz in memory, on a synthetic affinity volume with ground truth.

    python -m znnx.bench.segment [--size 256] [--chunks 64,64,64 32,32,32 100,64,80] [--size-zero] [--out DIR]

Every run is its own process (peak RSS is that process's and its children's); every chunked result
is compared voxel for voxel with znnx's in-memory result, one more after a SIGKILL mid-run and a
rerun; quality (adapted Rand error, variation of information) is against the ground truth. znnx runs
with `--size 0` beside waterz (which has no size-dependent single linkage, so both compute the same
thing; `--size-zero`) and with a size threshold of 25 voxels. Writes `segment.md` and `segment.json` to `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

THRESHOLD = 0.5
SIZE = 25


def make_data(folder: Path, size: int) -> tuple[str, str]:
    """A (3, size, size, size) float32 zarr of noisy affinities of a Voronoi ground truth (.npy)."""
    import zarr

    from znnx.segment.synthetic import affinities, cells, noisy

    truth = cells((size, size, size), 16)
    aff = noisy(affinities(truth), 0.3)
    source, gt = str(folder / "aff.zarr"), str(folder / "truth.npy")
    zarr.create_array(source, shape=aff.shape, chunks=(3, 64, 64, 64), dtype="float32")[:] = aff
    np.save(gt, truth)
    return source, gt


def _waterz(source: str, output: str) -> dict[str, Any]:
    import waterz
    import zarr

    began = time.perf_counter()  # like znnx's: reading the affinities and writing the labels included
    aff = np.asarray(zarr.open_array(source)[:], np.float32)
    labels = np.asarray(next(waterz.agglomerate(aff, [1 - THRESHOLD], aff_threshold_low=0.0001,
                                                aff_threshold_high=0.9999)))
    zarr.create_array(output, shape=labels.shape, chunks=(64, 64, 64), dtype="uint64")[:] = labels
    return {"seconds": time.perf_counter() - began}


def _znnx(source: str, output: str, size: int, chunk: str | None, cluster: str | None, workers: int) -> dict[str, Any]:
    from znnx.segment import SegmentOptions, segment

    summary = segment(source, output, SegmentOptions(size=size, threshold=THRESHOLD),
                      chunk=tuple(map(int, chunk.split(","))) if chunk else None, cluster=cluster, workers=workers)
    return {"seconds": summary.seconds, "steps": summary.steps}


def _one(args: argparse.Namespace) -> None:
    """Run one configuration here and print its JSON (the parent measures the RSS)."""
    result = _waterz(args.source, args.output) if args.one == "waterz" else \
        _znnx(args.source, args.output, args.ws_size, args.chunk, args.cluster, args.workers)
    own = _high_water_mib()
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps(result | {"peak_rss_mib": own, "worker_peak_rss_mib": workers}))


def _high_water_mib() -> float:
    """This process's peak RSS from /proc (VmHWM: its own memory since exec; getrusage's ru_maxrss
    keeps the parent's resident size at the fork that started it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _command(tool: str, source: str, output: str, size: int = 0, chunk: str | None = None,
             cluster: str | None = None, workers: int = 1) -> list[str]:
    command = [sys.executable, "-m", "znnx.bench.segment", "--one", tool, "--source", source, "--output", output,
               "--ws-size", str(size), "--workers", str(workers)]
    return command + (["--chunk", chunk] if chunk else []) + (["--cluster", cluster] if cluster else [])


def _run(command: list[str]) -> dict[str, Any]:
    """Run `command` in a fresh process: its JSON (seconds, its own and its largest worker's peak
    RSS in MiB) plus the wall seconds of the process."""
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1]) | {"wall_s": time.perf_counter() - began}


def _labels(path: str) -> np.ndarray:
    from znnx.volume import storage

    return storage.open_volume(path).read((slice(None),) * 3)



def _killed_and_resumed(source: str, output: str, chunk: str) -> dict[str, Any]:
    """SIGKILL a chunked run once its first linkage round has files, then rerun it to the end."""
    command = _command("znnx", source, output, SIZE, chunk, None, 2)
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    rounds = Path(output + ".znnx-segment") / "linkage" / "0"
    while child.poll() is None and not list(rounds.glob("*.npz")):
        time.sleep(0.05)
    killed = child.poll() is None
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    resumed = _run(command)
    return resumed | {"killed_mid_run": killed}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--chunks", nargs="+", default=["64,64,64", "32,32,32", "100,64,80"])
    parser.add_argument("--out", default="benchmarks/results-segment")
    parser.add_argument("--size-zero", action="store_true",
                        help="also run znnx in memory with no size-dependent single linkage, as waterz computes "
                             "(slow on large noisy volumes: every basin reaches the agglomeration)")
    parser.add_argument("--one", choices=("znnx", "waterz"), help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--ws-size", type=int, default=SIZE, help=argparse.SUPPRESS)
    parser.add_argument("--chunk", help=argparse.SUPPRESS)
    parser.add_argument("--cluster", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        _one(args)
        return
    from znnx.segment import adapted_rand_error, variation_of_information
    from znnx.segment.metrics import same_partition

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        source, gt = make_data(folder, args.size)
        truth = np.load(gt)
        runs: list[dict[str, Any]] = []

        def record(name: str, command: list[str] | None, output: str, reference: str | None,
                   result: dict[str, Any] | None = None) -> None:
            result = result or _run(command or [])
            labels = _labels(output)
            row = {"run": name, **result, "voxels_per_s": truth.size / result["seconds"],
                   "rand_error": adapted_rand_error(labels, truth),
                   "vi": variation_of_information(labels, truth).total}
            if reference is not None:
                expected = _labels(reference)
                row["equals"] = reference
                row["identical"] = bool(np.array_equal(labels, expected))
                row["same_partition"] = row["identical"] or same_partition(labels, expected)
            runs.append(row)
            print(json.dumps(row, default=str), flush=True)

        from znnx.segment.basins import library

        library()  # compiled once here, not inside the first timed run
        mem0, mem = str(folder / "mem0.zarr"), str(folder / "mem.zarr")
        try:
            import waterz  # noqa: F401

            record("waterz, in memory", _command("waterz", source, str(folder / "waterz.zarr")),
                   str(folder / "waterz.zarr"), None)
        except ImportError:
            print("waterz is not installed (pip install waterz): its rows are left out", file=sys.stderr)
        if args.size_zero:
            record("znnx, in memory, size 0", _command("znnx", source, mem0, 0), mem0,
                   str(folder / "waterz.zarr") if (folder / "waterz.zarr").exists() else None)
        record("znnx, in memory", _command("znnx", source, mem, SIZE), mem, None)
        for chunk in args.chunks:
            for name, cluster, workers in (("2 local workers", None, 2), ("Dask local:2", "local:2", 1)):
                output = str(folder / f"c{chunk.replace(',', 'x')}{workers}.zarr")
                record(f"znnx, chunks {chunk}, {name}", _command("znnx", source, output, SIZE, chunk, cluster,
                                                                 workers), output, mem)
        output = str(folder / "killed.zarr")
        record(f"znnx, chunks {args.chunks[0]}, 2 local workers, rerun after a SIGKILL mid-run (the rerun's time)",
               None, output, mem,
               _killed_and_resumed(source, output, args.chunks[0]))
    (out / "segment.json").write_text(json.dumps({"size": args.size, "runs": runs}, indent=2, default=str))
    lines = [f"# Segmentation, {args.size}^3 synthetic affinities (threshold {THRESHOLD})", "",
             f"`python -m znnx.bench.segment --size {args.size} --chunks {' '.join(args.chunks)}`", "",
             "| run | seconds | voxels/s | peak RSS MiB: main / largest worker | adapted Rand error | VI | "
             "same as |", "|---|---:|---:|---:|---:|---:|---|"]
    for row in runs:
        same = ""
        if "equals" in row:
            verdict = "identical" if row["identical"] else "same partition" if row["same_partition"] else "DIFFERENT"
            same = f"{Path(row['equals']).name}: {verdict}"
        rss = f"{row['peak_rss_mib']:,.0f} / {row['worker_peak_rss_mib']:,.0f}"
        lines.append(f"| {row['run']} | {row['seconds']:.1f} | {row['voxels_per_s']:,.0f} | {rss} | "
                     f"{row['rand_error']:.4f} | {row['vi']:.3f} | {same} |")
    (out / "segment.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
