"""How far Winograd strays in bf16: the error of F(m, 3) with its transformed input tiles (V) and
kernel (U) rounded to bf16 (what a bf16 GEMM stage inside Winograd, `vdpbf16ps` with fp32 sums, would
multiply), against oneDNN-style bf16 direct convolution (the weights rounded to bf16, exact products,
fp32 sums), both against the float64 convolution of the same bf16 activations, both outputs rounded
to bf16 as a bf16 net stores them.

    python benchmarks/bf16_winograd_error.py

Prints max |y - y_exact| / max |y_exact| per layer and algorithm. Everything but the roundings runs in
float64, so the figures are the roundings' alone, the least a kernel could reach.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import torch

from znnx.kernels.winograd import transforms

LAYERS = (((3, 3, 3), 32, (18, 18, 18)), ((3, 3, 3), 64, (14, 14, 14)), ((1, 3, 3), 28, (1, 38, 38)),
          ((1, 3, 3), 12, (1, 42, 42)))


def bf16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.bfloat16).to(torch.float64)


def matrix(rows: Sequence[Sequence[Fraction]]) -> torch.Tensor:
    return torch.tensor([[float(v) for v in row] for row in rows], dtype=torch.float64)


def along(t: torch.Tensor, m: torch.Tensor, axis: int) -> torch.Tensor:
    """`m` applied along `axis` of `t`."""
    return torch.movedim(torch.tensordot(t, m, dims=([axis], [1])), -1, axis)


def winograd_bf16(x: torch.Tensor, w: torch.Tensor, m: int) -> torch.Tensor:
    """Valid conv of x (C, D, H, W) with w (C', C, *kernel) by F(m, 3), V and U rounded to bf16; the
    output's extent is cut to whole tiles."""
    kernel = w.shape[2:]
    b_t, g, a_t = (matrix(t) for t in transforms(3, m))
    tiles = x
    for axis, k in enumerate(kernel):
        tiles = tiles.unfold(1 + axis, m + 2, m) if k > 1 else tiles.unfold(1 + axis, 1, 1)
    v, u = tiles, w
    for axis, k in enumerate(kernel):
        if k > 1:
            v, u = along(v, b_t, 4 + axis), along(u, g, 2 + axis)
    y = torch.einsum("cdhwxyz,ocxyz->odhwxyz", bf16(v), bf16(u))
    for axis, k in enumerate(kernel):
        if k > 1:
            y = along(y, a_t, 4 + axis)
    c, nd, nh, nw, md, mh, mw = y.shape
    return y.permute(0, 1, 4, 2, 5, 3, 6).reshape(c, nd * md, nh * mh, nw * mw)


def main() -> None:
    generator = torch.Generator().manual_seed(0)
    print("| layer | bf16 direct | " + " | ".join(f"bf16 F({m},3)" for m in (2, 4)) + " |")
    print("|---|---:|" + "---:|" * 2)
    for kernel, channels, spatial in LAYERS:
        x = bf16(torch.rand((channels, *spatial), generator=generator, dtype=torch.float64) * 2 - 0.5)
        w = torch.randn((channels, channels, *kernel), generator=generator, dtype=torch.float64)
        w /= np.sqrt(channels * np.prod(kernel))
        exact = torch.nn.functional.conv3d(x[None], w)[0]
        scale = float(exact.abs().max())
        direct = bf16(torch.nn.functional.conv3d(x[None], bf16(w))[0])
        errors = [float((direct - exact).abs().max()) / scale]
        for m in (2, 4):
            y = bf16(winograd_bf16(x, w, m))
            errors.append(float((y - exact[:, :y.shape[1], :y.shape[2], :y.shape[3]]).abs().max()) / scale)
        name = f"{channels} -> {channels} {'x'.join(map(str, kernel))}"
        print(f"| {name} | " + " | ".join(f"{e:.1e}" for e in errors) + " |")


if __name__ == "__main__":
    main()
