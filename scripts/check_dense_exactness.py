"""Dense output against the window-by-window net at 1,000 random voxels, each dense form, for N4,
VD2D3D (corrected) and ZNNi's n337 at full width, random weights.

    python scripts/check_dense_exactness.py [--voxels 1000] [--models ../shared/models]

Prints, per net and form, the max error relative to the largest output (direct convolutions, so
the figure is the dense transform's own; with the autotuner's algorithms it is within their bounds,
F(4,3) 1e-4), and the seconds each side took.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import znnx
from znnx.bench.sliding import znni_net
from znnx.passes.dense import fragmented, period
from znnx.report import geometry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.passes.windows import windows


def check(name: str, graph: znnx.Graph, voxels: int, seed: int) -> None:
    fov = geometry(graph).receptive_field
    base = fragmented(graph).types[graph.inputs[0]].spatial
    side = math.ceil(voxels ** (1 / sum(f > 1 for f in fov)))
    patch = tuple(b + (p * math.ceil(side / p) if f > 1 else 0) for b, f, p in zip(base, fov, period(graph)))
    rng = np.random.default_rng(seed)
    inputs = [rng.random((graph.types[n].channels, *patch), dtype=np.float32) for n in graph.inputs]
    outputs = {}
    for path in ("dilated", "mpf"):
        began = time.perf_counter()
        net = znnx.compile(graph, patch=patch, dense=path, algorithm="direct")
        outputs[path] = (net(*inputs), time.perf_counter() - began)
    spatial = outputs["mpf"][0].shape[1:]
    flat = rng.choice(math.prod(spatial), size=voxels, replace=False)
    began = time.perf_counter()
    want = windows(graph, inputs, np.stack(np.unravel_index(flat, spatial), -1))
    naive = time.perf_counter() - began
    for path, (got, seconds) in outputs.items():
        picked = got.reshape(got.shape[0], -1)[:, flat].T
        error = float(np.abs(picked - want).max() / np.abs(want).max())
        print(f"{name:8s} {path:8s} patch {'x'.join(map(str, patch))} -> {'x'.join(map(str, spatial))}: "
              f"max relative error {error:.1e} at {voxels} voxels ({seconds:.1f} s dense, {naive:.1f} s naive)",
              flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--voxels", type=int, default=1000)
    parser.add_argument("--models", default=str(Path(__file__).resolve().parents[2] / "shared" / "models"))
    args = parser.parse_args()
    models = Path(args.models)
    check("N4", znnx.load(models / "N4.znn"), args.voxels, 0)
    with tempfile.TemporaryDirectory() as tmp:
        corrected = Path(tmp) / "VD2D3D.znn"
        corrected.write_text((models / "VD2D3D.znn").read_text().replace("input npool\n", "input npool1\n"))
        check("VD2D3D", znnx.load(corrected), args.voxels, 1)
    check("n337", znnx.load(znni_net("n337").classifier(), (1, 85, 85, 85)), args.voxels, 2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
