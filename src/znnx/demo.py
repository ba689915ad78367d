"""`znnx demo`: the bundled U-Net over a synthetic volume, checked against the reference executor."""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

import numpy as np

DEMO_MODEL = "demo_unet.onnx"


def synthetic_volume(size: int, seed: int = 0) -> np.ndarray:
    """A (1, size, size, size) float32 volume of bright blobs with dark borders and noise, in [0, 1]."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*(np.arange(size),) * 3, indexing="ij"), axis=-1).astype(np.float32)
    centers = rng.uniform(0, size, (12, 3)).astype(np.float32)
    distance = np.min(np.linalg.norm(grid[..., None, :] - centers, axis=-1), axis=-1)
    volume = np.cos(distance / 3.0) ** 2 + rng.normal(0, 0.05, (size,) * 3)
    return np.clip(volume, 0, 1).astype(np.float32)[None]


def model_path() -> Path:
    return Path(str(resources.files("znnx") / "data" / DEMO_MODEL))


def run_demo(out: Path, size: int = 48, device: str = "cpu") -> str:
    """Run the demo, save input.npy and output.npy in `out`, and return a human-readable report."""
    import znnx
    from znnx import reference

    volume = synthetic_volume(size)
    net = znnx.compile(znnx.load(model_path(), input_shape=volume.shape), device=device)
    net(volume)
    start = time.perf_counter()
    output = net(volume)
    seconds = time.perf_counter() - start
    oracle = reference.run(net.graph, {net.graph.inputs[0]: volume[None]})[net.graph.outputs[0]][0]
    error = float(np.abs(output - oracle).max() / max(np.abs(oracle).max(), 1e-30))
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "input.npy", volume)
    np.save(out / "output.npy", output)
    voxels = int(np.prod(output.shape[1:]))
    return "\n".join([
        net.summary(),
        "",
        f"input  {out / 'input.npy'}: {volume.shape}",
        f"output {out / 'output.npy'}: {output.shape}, {seconds:.3f} s, {voxels / seconds:,.0f} output voxels/s",
        f"max error vs the NumPy reference executor: {error:.2e} (relative)",
    ])
