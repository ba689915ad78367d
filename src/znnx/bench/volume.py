"""Volume benchmark: end-to-end `infer_volume` on a uint8 zarr volume against the net's in-memory
patch throughput, and against MONAI's sliding_window_inference on the same model and volume.

    python -m znnx.bench.volume [--net symmetric] [--size 256] [--threads 2] [--out DIR]
    python -m znnx.bench.volume --device cuda --precision fp16 --patch auto --size 512 --skip-monai

Three runs, one process, same threads, same model and weights:
1. in-memory: the compiled net on one patch already in memory (median of 5 after a warm-up);
2. znnx tiles: `infer_volume` in blend mode with overlap 0 (plain tiling, every output voxel
   computed once), zarr in and out, the median of 3 runs: its voxels/s over (1) is the pipeline's
   efficiency;
3. znnx vs MONAI in MONAI's default mode (overlap 0.25, Gaussian weights), end to end: MONAI reads
   the zarr into memory, runs the PyTorch module and writes the zarr; znnx streams it.
Peak RSS is reported per run (each run's growth is hidden by the process peak, so MONAI runs last).
With `--patch auto` the patch is the one `infer_volume` chooses for this volume (exact mode) and the
end-to-end row is that exact-mode run; `--device` and `--precision` place the net (MONAI, a CPU
PyTorch peer here, is then best skipped).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from znnx.bench.models import NETS
from znnx.volume.progress import peak_rss_bytes


def make_volume(path: Path, size: int) -> str:
    """A cubic uint8 zarr array of edge `size` at `path`/raw (the demo's synthetic cells, tiled)."""
    import zarr

    from znnx.demo import synthetic_volume

    tile = np.rint(synthetic_volume(64)[0] * 255).astype(np.uint8)
    reps = -(-size // 64)
    data = np.tile(tile, (reps, reps, reps))[:size, :size, :size]
    zarr.create_array(store=str(path), name="raw", data=data, chunks=(64, 64, 64), overwrite=True)
    return str(path / "raw")


def _in_memory(net: object, reps: int = 5) -> float:
    x = np.random.default_rng(0).random(net.input_shape).astype(np.float32)  # type: ignore[attr-defined]
    net(x)  # type: ignore[operator]
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        net(x)  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _monai(model: torch.nn.Module, source: str, target: str, patch: tuple[int, ...], scale: float) -> float:
    import zarr
    from monai.inferers import sliding_window_inference

    start = time.perf_counter()
    raw = np.asarray(zarr.open_array(source.rsplit("/", 1)[0], path="raw", mode="r")[...])
    x = torch.from_numpy(raw.astype(np.float32) * scale)[None, None]
    with torch.inference_mode():
        y: torch.Tensor = sliding_window_inference(x, patch, 1, model, overlap=0.25, mode="gaussian")  # type: ignore
    zarr.create_array(store=target, name="pred", data=y[0].numpy(), chunks=(y.shape[1], 64, 64, 64), overwrite=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    import znnx
    from znnx.volume import VolumeOptions, infer_volume

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", default="symmetric", choices=sorted(NETS))
    parser.add_argument("--size", type=int, default=256, help="edge of the cubic uint8 volume (default 256)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="narrow net and small patch (smoke test)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--patch", default="net", help="'net' (the net's standard patch) or 'auto'")
    parser.add_argument("--skip-monai", action="store_true", help="no MONAI run (a CPU peer; slow beside a GPU)")
    parser.add_argument("--out", default="benchmarks/results-volume")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = NETS[args.net]
    patch: tuple[int, ...] = spec.tiny_patch if args.tiny else spec.patch
    torch.manual_seed(0)
    model = spec.build(args.tiny, patch).eval()
    graph = znnx.load(model, input_shape=(1, *patch))
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        source = make_volume(work / "in.zarr", args.size)
        voxels = args.size**3
        if args.patch == "auto":
            auto = infer_volume(graph, source, str(work / "auto.zarr/pred"), options=VolumeOptions(scale=1 / 255),
                                device=args.device, precision=args.precision, quiet=True)
            patch = auto.patch
            rows["znnx exact, automatic patch (first run)"] = {
                "voxels_per_s": auto.voxels_per_s, "seconds": auto.seconds, "patches": auto.patches,
                "compute_s": auto.compute_seconds, "peak_rss_mib": auto.peak_rss_mib}
        net = znnx.compile(graph, patch=patch, device=args.device, precision=args.precision)
        if args.patch == "auto":
            again = infer_volume(net, source, str(work / "auto2.zarr/pred"), options=VolumeOptions(scale=1 / 255),
                                 quiet=True)
            rows["znnx exact, automatic patch"] = {
                "voxels_per_s": again.voxels_per_s, "seconds": again.seconds, "patches": again.patches,
                "compute_s": again.compute_seconds, "peak_rss_mib": again.peak_rss_mib}
        seconds = _in_memory(net)
        out_voxels = int(np.prod(net.output_shape[1:]))
        rows["in-memory patch"] = {"voxels_per_s": out_voxels / seconds, "seconds": seconds,
                                   "peak_rss_mib": peak_rss_bytes() / 2**20}
        scale = 1 / 255
        tiles = sorted((infer_volume(net, source, str(work / f"tiles{i}.zarr/pred"), options=VolumeOptions(
            mode="blend", overlap=(0.0,) * 3, weighting="constant", scale=scale), quiet=True) for i in range(3)),
            key=lambda summary: summary.seconds)[1]
        rows["znnx tiles (overlap 0, median of 3)"] = {"voxels_per_s": tiles.voxels_per_s, "seconds": tiles.seconds,
                                          "patches": tiles.patches, "compute_s": tiles.compute_seconds,
                                          "peak_rss_mib": tiles.peak_rss_mib}
        blend = infer_volume(net, source, str(work / "blend.zarr/pred"), options=VolumeOptions(
            mode="blend", overlap=(0.25,) * 3, weighting="gaussian", scale=scale), quiet=True)
        rows["znnx blend (0.25, gaussian)"] = {"voxels_per_s": blend.voxels_per_s, "seconds": blend.seconds,
                                               "patches": blend.patches, "compute_s": blend.compute_seconds,
                                               "peak_rss_mib": blend.peak_rss_mib}
        speedup = difference = float("nan")
        if not args.skip_monai:
            monai_seconds = _monai(model, source, str(work / "monai.zarr"), patch, scale)
            rows["MONAI sliding_window_inference (0.25, gaussian)"] = {
                "voxels_per_s": voxels / monai_seconds, "seconds": monai_seconds,
                "peak_rss_mib": peak_rss_bytes() / 2**20}
            import zarr

            ours = np.asarray(zarr.open_array(str(work / "blend.zarr"), path="pred", mode="r")[...])
            theirs = np.asarray(zarr.open_array(str(work / "monai.zarr"), path="pred", mode="r")[...])
            difference = float(np.abs(ours - theirs).max())
            speedup = monai_seconds / blend.seconds
    efficiency = rows["znnx tiles (overlap 0, median of 3)"]["voxels_per_s"] / rows["in-memory patch"]["voxels_per_s"]
    exact = rows.get("znnx exact, automatic patch")
    lines = [f"# Volume benchmark: {args.net} net, patch {'x'.join(map(str, patch))}, {args.size}^3 uint8 zarr, "
             f"{args.device} {args.precision}, {args.threads} threads", "",
             "| run | output voxels/s | seconds | patches | peak RSS MiB |", "|---|---:|---:|---:|---:|"]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['voxels_per_s']:,.0f} | {row['seconds']:.2f} | {row.get('patches', '-')} | "
                     f"{row['peak_rss_mib']:,.0f} |")
    if exact is not None:
        lines += ["", f"- exact mode at the automatic patch, end to end / in-memory patch throughput: "
                      f"{exact['voxels_per_s'] / rows['in-memory patch']['voxels_per_s']:.3f} (counts only the "
                      f"voxels each patch keeps against all it computes: the in-memory row is per computed voxel)"]
    lines += ["", f"- end-to-end tiles / in-memory patch throughput: {efficiency:.3f}"]
    if not args.skip_monai:
        lines += [f"- znnx blend vs MONAI, end to end: {speedup:.2f}x faster",
                  f"- max |znnx blend - MONAI| over the volume: {difference:.2e} (same windows and Gaussian; znnx "
                  f"runs the compiled graph)"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"rows": rows, "efficiency": efficiency, "speedup_vs_monai": speedup,
                                                  "max_difference": difference}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
