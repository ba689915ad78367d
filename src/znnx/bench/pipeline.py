"""The volume pipeline's ceiling: `znnx infer` with a net that costs nothing against reading the
input chunks and writing the output chunks alone.

    python -m znnx.bench.pipeline [--size 512] [--patch 128] [--output-dtype uint8] [--threads 2]

The net is one 1x1x1 convolution on one channel, so what `infer_volume` adds to the storage work is
the pipeline itself (normalizing, checking, converting, the ledger). The ceiling reads the same
blocks' input boxes and writes the same output boxes, into an output created the same way (same
codecs, chunks and dtype), with the runner's threads (two readers, one writer, overlapped). Both are
the median of `--reps` runs. A GPU net that outruns this ceiling is limited by it (issue 22).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from znnx.bench.volume import make_volume
from znnx.volume.progress import peak_rss_bytes


def trivial_net(patch: tuple[int, int, int]) -> Any:
    """A net that costs nothing: one 1x1x1 convolution, one channel in and out."""
    import znnx
    from znnx.frontends.builder import GraphBuilder

    b = GraphBuilder("trivial", 3)
    x = b.add_input("x", 1, patch)
    attrs = {"kernel": (1, 1, 1), "stride": (1, 1, 1), "dilation": (1, 1, 1), "pads": (0,) * 6, "groups": 1}
    return znnx.compile(b.finish([b.add("conv", [x], attrs, {"weight": np.ones((1, 1, 1, 1, 1)),
                                                             "bias": np.zeros(1)})]))


def storage_alone(net: Any, source: str, target: str, options: Any) -> float:
    """Seconds to read every block's input box and write the same values, in the output dtype, as the
    block's output (a 1x1x1 net reads exactly its write box), nothing else."""
    from znnx.volume import storage
    from znnx.volume.runner import _Reader, plan_run

    run = plan_run(net, source, target, options)
    reader = _Reader(storage.open_volume(source), run.spatial, options)
    out = storage.create_volume(target, run.output_shape, options.output_dtype, run.chunks)
    def values(block: Any) -> np.ndarray:
        raw = reader.raw(block.reads[0])
        assert raw is not None, "every block of a run over the whole volume reads inside it"
        return raw.astype(options.output_dtype)

    start = time.perf_counter()
    with ThreadPoolExecutor(2) as reads, ThreadPoolExecutor(1) as writes:
        loaded = [reads.submit(values, block) for block in run.blocks]
        written = [writes.submit(out.write, (slice(None), *block.write.slices()), future.result())
                   for block, future in zip(run.blocks, loaded)]
        for future in written:
            future.result()
        out.flush()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    from znnx.volume import VolumeOptions, infer_volume

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="edge of the cubic uint8 zarr volume (default 512)")
    parser.add_argument("--patch", type=int, default=128, help="edge of the cubic patch (default 128)")
    parser.add_argument("--output-dtype", default="uint8", choices=("uint8", "float16", "float32"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results-pipeline")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    patch = (args.patch,) * 3
    net = trivial_net(patch)
    options = VolumeOptions(scale=1 / 255, overwrite=True, output_dtype=args.output_dtype)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        source = make_volume(work / "in.zarr", args.size)
        ours, ceiling = [], []
        for rep in range(args.reps):  # alternate, so that both see the same machine
            ceiling.append(storage_alone(net, source, str(work / f"alone{rep}.zarr/p"), options))
            summary = infer_volume(net, source, str(work / f"znnx{rep}.zarr/p"), options=options, quiet=True)
            ours.append(summary.seconds)
    voxels = args.size**3
    rows = {"storage alone (read + write, 2 readers, 1 writer)": statistics.median(ceiling),
            "znnx infer (1x1x1 net)": statistics.median(ours)}
    ratio = rows["storage alone (read + write, 2 readers, 1 writer)"] / rows["znnx infer (1x1x1 net)"]
    lines = [f"# Pipeline ceiling: {args.size}^3 uint8 zarr (64^3 chunks) -> {args.output_dtype}, patch "
             f"{args.patch}^3, {args.threads} threads, median of {args.reps}", "",
             "| run | output voxels/s | seconds |", "|---|---:|---:|",
             *(f"| {name} | {voxels / seconds:,.0f} | {seconds:.2f} |" for name, seconds in rows.items()), "",
             f"- znnx / storage alone: {ratio:.2f} (target >= 0.80); peak RSS {peak_rss_bytes() / 2**20:,.0f} MiB"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"seconds": rows, "ratio": ratio, "runs": {
        "znnx": ours, "storage_alone": ceiling}, "size": args.size, "patch": args.patch,
        "output_dtype": args.output_dtype, "threads": args.threads}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
