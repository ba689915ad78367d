"""`znnx demo`: the bundled U-Net streamed over a synthetic volume stored as zarr, block by block.

The net is a small U-Net trained with `znnx train` to predict cell boundaries on synthetic EM data
(scripts/train_demo.sh). The run writes `input.zarr/raw` (uint8, the same kind of EM-like cells),
`output.zarr/pred` (the boundary probability, float32) and `preview.png` (the middle input slice
beside the prediction), then checks the blockwise result against one whole-volume call of the net
and against the NumPy reference executor.
"""

from __future__ import annotations

import struct
import zlib
from importlib import resources
from pathlib import Path

import numpy as np

from znnx import status

DEMO_MODEL = "demo_unet.onnx"
DEMO_PATCH = (40, 40, 40)


def synthetic_volume(size: int, seed: int = 1) -> np.ndarray:
    """A (1, size, size, size) float32 EM-like volume of cells (training/synthetic.py), in [0, 1]; the
    seed differs from the demo net's training data."""
    from znnx.training.synthetic import em_volume

    image, _ = em_volume((size,) * 3, seed=seed)
    return (image.astype(np.float32) / 255)[None]


def model_path() -> Path:
    return Path(str(resources.files("znnx") / "data" / DEMO_MODEL))


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 image as an 8-bit RGB PNG (no imaging library needed)."""
    height, width, _ = rgb.shape
    rows = b"".join(b"\0" + np.ascontiguousarray(row).tobytes() for row in rgb)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 6))
                     + chunk(b"IEND", b""))


def stretch(image: np.ndarray) -> np.ndarray:
    """`image` mapped so that its 1st and 99th percentiles become 0 and 1 (clipped): a net's output
    may span a narrow range that would otherwise show as a flat grey."""
    low, high = np.percentile(image, [1, 99])
    return np.clip((image - low) / max(high - low, 1e-12), 0, 1)


def preview(volume: np.ndarray, output: np.ndarray, zoom: int = 4) -> np.ndarray:
    """The middle z slice of the input (grey) beside the output: one channel as grey (a probability
    in [0, 1], shown as it is), or the first three as RGB, each channel's contrast stretched."""
    z = volume.shape[-3] // 2
    grey = np.repeat(volume[0, z, :, :, None], 3, axis=-1)
    if output.shape[0] < 3:
        colour = np.repeat(np.clip(output[0, z], 0, 1)[:, :, None], 3, axis=-1)
    else:
        colour = np.stack([stretch(channel) for channel in output[:3, z]], axis=-1)
    gap = np.ones((grey.shape[0], 2, 3), np.float32)
    image = np.concatenate([grey, gap, colour], axis=1)
    image = np.kron(image, np.ones((zoom, zoom, 1), np.float32))
    return np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)


def run_demo(out: Path, size: int = 64, device: str = "cpu") -> str:
    """Run the demo in `out` and return a human-readable report."""
    import zarr

    import znnx
    from znnx import reference
    from znnx.volume import VolumeOptions, infer_volume

    status.report("demo: writing a synthetic volume", force=True)
    volume = synthetic_volume(size)
    raw = np.rint(volume[0] * 255).astype(np.uint8)
    out.mkdir(parents=True, exist_ok=True)
    zarr.create_array(store=str(out / "input.zarr"), name="raw", data=raw, chunks=(32, 32, 32), overwrite=True)
    graph = znnx.load(model_path(), input_shape=(1, 48, 48, 48))
    patch = tuple(min(p, size) for p in DEMO_PATCH)
    status.report("demo: compiling the net and streaming the volume through it block by block", force=True)
    summary = infer_volume(graph, str(out / "input.zarr/raw"), str(out / "output.zarr/pred"), patch,
                           VolumeOptions(scale=1 / 255, overwrite=True), device=device, quiet=True)
    status.report("demo: checking against whole-volume inference and the NumPy reference executor", force=True)
    result = np.asarray(zarr.open_array(str(out / "output.zarr"), path="pred", mode="r")[...])
    scaled = (raw.astype(np.float32) / 255)[None]
    whole_net = znnx.compile(graph, patch=scaled.shape[1:], device=device)
    whole = whole_net(scaled)
    oracle = reference.run(whole_net.graph, {whole_net.graph.inputs[0]: scaled[None]})[whole_net.graph.outputs[0]][0]
    blockwise_error = float(np.abs(result - whole).max())
    error = float(np.abs(whole - oracle).max() / max(np.abs(oracle).max(), 1e-30))
    write_png(out / "preview.png", preview(scaled, result))
    status.clear()
    return "\n".join([
        whole_net.summary(),
        "",
        f"input   {out / 'input.zarr/raw'}: {raw.shape} uint8",
        f"output  {out / 'output.zarr/pred'}: {result.shape} float32, {summary.blocks} blocks of patch "
        f"{'x'.join(map(str, summary.patch))}, {summary.seconds:.2f} s, {summary.voxels_per_s:,.0f} output voxels/s",
        f"preview {out / 'preview.png'} (middle slice: input | predicted boundary probability)",
        "the demo net was trained with `znnx train` on synthetic EM cells (scripts/train_demo.sh)",
        f"blockwise vs whole-volume max difference: {blockwise_error:.2e}",
        f"max error vs the NumPy reference executor: {error:.2e} (relative)",
    ])
