"""Dask benchmark: the same volume job on the local runner and on LocalClusters of 1 and 2
single-threaded worker processes, for scaling and for the Dask path's overhead per block.

    python -m znnx.bench.dask [--size 64,512,512] [--out DIR]

Two jobs on one uint8 zarr volume, plain tiling (blend mode, overlap 0), one compute thread per
process everywhere:
- `full`: the symmetric benchmark net at its standard patch (compute-bound blocks): throughput of
  the local runner, 1 worker and 2 workers; scaling = 2 workers over 1;
- `tiny`: its narrow variant at the tiny patch (many blocks with almost no compute): the Dask
  path's overhead per block = (1-worker seconds - local seconds) / blocks.
Each cluster job runs twice and the second (warm: workers have loaded the net) is reported; the
first is shown as `cold`. Peak RSS is the largest of the client and the workers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from znnx.bench.models import NETS

JOBS = ("full", "tiny")


def _volume(path: Path, shape: tuple[int, ...]) -> str:
    import zarr

    from znnx.demo import synthetic_volume

    tile = np.rint(synthetic_volume(64)[0] * 255).astype(np.uint8)
    reps = [-(-s // 64) for s in shape]
    data = np.tile(tile, reps)[tuple(slice(0, s) for s in shape)]
    zarr.create_array(store=str(path), name="raw", data=data, chunks=(64, 64, 64), overwrite=True)
    return str(path / "raw")


def _row(summary: Any) -> dict[str, Any]:
    return {"seconds": summary.seconds, "voxels_per_s": summary.voxels_per_s, "blocks": summary.blocks,
            "patches": summary.patches, "workers": summary.workers, "peak_rss_mib": summary.peak_rss_mib}


def main(argv: list[str] | None = None) -> None:
    import znnx
    from znnx.volume import VolumeOptions, infer_volume
    from znnx.volume.dask_runner import connect

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="64,512,512", help="volume shape D,H,W (default 64,512,512)")
    parser.add_argument("--out", default="benchmarks/results-dask")
    args = parser.parse_args(argv)
    shape = tuple(int(v) for v in args.size.split(","))
    torch.set_num_threads(1)
    spec = NETS["symmetric"]
    nets = {}
    for job in JOBS:
        patch = spec.tiny_patch if job == "tiny" else spec.patch
        torch.manual_seed(0)
        nets[job] = znnx.compile(znnx.load(spec.build(job == "tiny", patch), input_shape=(1, *patch)), patch=patch)
    options = VolumeOptions(mode="blend", overlap=(0.0,) * 3, weighting="constant", scale=1 / 255, overwrite=True)
    rows: dict[str, dict[str, dict[str, Any]]] = {job: {} for job in JOBS}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        source = _volume(work / "in.zarr", shape)
        for job in JOBS:
            rows[job]["local runner"] = _row(infer_volume(nets[job], source, str(work / f"local-{job}.zarr/pred"),
                                                          options=options, quiet=True))
        for workers in (1, 2):
            with connect(f"local:{workers}") as client:
                for job in JOBS:
                    out = str(work / f"dask{workers}-{job}.zarr/pred")
                    cold = infer_volume(nets[job], source, out, options=options, quiet=True, client=client, threads=1)
                    warm = infer_volume(nets[job], source, out, options=options, quiet=True, client=client, threads=1)
                    same = np.array_equal(_read(out), _read(str(work / f"local-{job}.zarr/pred")))
                    rows[job][f"dask, {workers} worker(s)"] = {**_row(warm), "cold_seconds": cold.seconds,
                                                               "equals_local": same}
    full, tiny = rows["full"], rows["tiny"]
    scaling = full["dask, 1 worker(s)"]["seconds"] / full["dask, 2 worker(s)"]["seconds"]
    overhead = {job: (rows[job]["dask, 1 worker(s)"]["seconds"] - rows[job]["local runner"]["seconds"])
                / rows[job]["local runner"]["blocks"] for job in JOBS}
    lines = [f"# Dask benchmark: symmetric net, {'x'.join(map(str, shape))} uint8 zarr, tiles (blend, overlap 0), "
             f"1 compute thread per process", ""]
    for job in JOBS:
        lines += [f"## {job} net, patch {'x'.join(map(str, nets[job].input_shape[1:]))}", "",
                  "| run | output voxels/s | seconds (warm) | seconds (cold) | blocks | workers used | equals local "
                  "| peak RSS MiB |", "|---|---:|---:|---:|---:|---:|---|---:|"]
        for name, row in rows[job].items():
            lines.append(f"| {name} | {row['voxels_per_s']:,.0f} | {row['seconds']:.2f} | "
                         f"{row.get('cold_seconds', row['seconds']):.2f} | {row['blocks']} | {row['workers']} | "
                         f"{row.get('equals_local', '-')} | {row['peak_rss_mib']:,.0f} |")
        lines.append("")
    lines += [f"- scaling, full net: 2 workers / 1 worker throughput = {scaling:.2f}x",
              f"- Dask overhead per block (1 worker vs local runner, warm): tiny net "
              f"{overhead['tiny'] * 1000:.1f} ms over {tiny['local runner']['blocks']} blocks; full net "
              f"{overhead['full'] * 1000:.0f} ms over {full['local runner']['blocks']} blocks"]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.md").write_text("\n".join(lines) + "\n")
    (out_dir / "results.json").write_text(json.dumps({"rows": rows, "scaling": scaling, "overhead_s": overhead},
                                                     indent=2) + "\n")
    print("\n".join(lines))


def _read(spec: str) -> np.ndarray:
    from znnx.volume import storage

    volume = storage.open_volume(spec)
    return volume.read((slice(None),) * len(volume.shape))


if __name__ == "__main__":
    main()
