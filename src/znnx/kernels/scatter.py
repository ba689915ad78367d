"""A transposed convolution with overlapping windows and few output channels in C (kernels/winograd.c
`scatter_conv`): a U-Net's last up-convolution straight to its classes (MONAI's UNet: 32 -> 2 channels,
kernel 3, stride 2, 48^3 -> 96^3). A stride-1 convolution is the transposed convolution of its
spatially flipped kernel (`forward_conv`): a score layer into few channels (PZnet's 28 -> 3, (1,5,5)
at 18x192x192: Winograd F(4,5) 26.7 ms, oneDNN 44).

oneDNN's deconvolution blocks the output channels by 16, so at 2 output channels it runs at 33
GFLOP/s (11.4 ms for that layer; OpenVINO the same). Here each run of input voxels takes one GEMM with
every tap's weights as its columns (27 taps x 2 channels: one 64-wide GEMM block) and adds each kernel
row's taps into their output voxels; one pass then adds the bias and applies the fused epilogue.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from znnx.kernels import winograd

CHANNELS = 4
"""Output channels up to which the scatter runs instead of oneDNN (64 -> 4 at 24^3: 1.1 ms against
2.8; MONAI's 64 -> 16 ran 3.1 ms in oneDNN at 240 GFLOP/s, where 432 GEMM columns would each be
added into the output)."""


def applicable(c_out: int, dilation: Sequence[int], groups: int) -> bool:
    return c_out <= CHANNELS and tuple(dilation) == (1, 1, 1) and groups == 1


def footprint(c_in: int, c_out: int, kernel: Sequence[int]) -> int:
    """Weight bytes: every tap's C_in x C_out weights as GEMM columns, padded to the vector width."""
    return c_in * winograd._round(int(np.prod(kernel)) * c_out, winograd.VB) * 4


def forward_conv(weight: torch.Tensor, bias: torch.Tensor | None, pads: Sequence[int], out_spatial: Sequence[int],
                 steps: Sequence[str], alpha: float, scale: tuple[torch.Tensor, torch.Tensor] | None = None,
                 slope: torch.Tensor | None = None) -> ScatterConv:
    """The stride-1 convolution with `weight` (C_out, C_in, kd, kh, kw) and `pads` as a ScatterConv: y[p]
    = sum_t x[p + t - pad] w[t] is the transposed convolution of the flipped kernel with pads k - 1 - pad."""
    kernel = weight.shape[2:]
    flipped = weight.detach().float().flip(2, 3, 4).transpose(0, 1)
    return ScatterConv(flipped, bias, (1, 1, 1), [k - 1 - p for k, p in zip(kernel, pads[:3])], out_spatial, steps,
                       alpha, scale, slope)


class ScatterConv:
    """One transposed convolution (weight (C_in, C_out, kd, kh, kw), pads the leading ones) to
    `out_spatial`; called like winograd.WinogradConv: (channels-last input, *, out=None, residual=None)
    -> output."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, stride: Sequence[int], pads: Sequence[int],
                 out_spatial: Sequence[int], steps: Sequence[str], alpha: float,
                 scale: tuple[torch.Tensor, torch.Tensor] | None = None, slope: torch.Tensor | None = None) -> None:
        c_in, c_out = int(weight.shape[0]), int(weight.shape[1])
        self.kernel = tuple(int(k) for k in weight.shape[2:])
        self.stride, self.pads = tuple(int(s) for s in stride), tuple(int(p) for p in pads[:3])
        self.out_spatial = tuple(int(s) for s in out_spatial)
        self.lib = winograd._library()
        self.c_in, self.c_out = c_in, c_out
        columns = weight.detach().float().permute(0, 2, 3, 4, 1).reshape(c_in, -1)
        self.np = winograd._round(columns.shape[1], winograd.VB)
        self.w = torch.zeros(c_in, self.np)
        self.w[:, :columns.shape[1]] = columns
        self.epilogue = winograd.CEpilogue(steps, alpha, c_out, c_out, bias, scale, slope)
        self.period = math.lcm(c_out, winograd.VB)
        self.patterns = [v.repeat(self.period // c_out) for v in self.epilogue.vectors]

    def __call__(self, x: torch.Tensor, *, out: torch.Tensor | None = None,
                 residual: torch.Tensor | None = None) -> torch.Tensor:
        n, _, d, h, w = x.shape
        shape = (n, self.c_out, *self.out_spatial)
        x = x.contiguous(memory_format=torch.channels_last_3d)
        if out is not None and not winograd._channels_last(out):
            return out.copy_(self(x, residual=residual))
        if self.epilogue.add:
            assert residual is not None
            residual = residual.contiguous(memory_format=torch.channels_last_3d)
        aliased = out is not None and residual is not None and out.data_ptr() == residual.data_ptr()
        y = torch.empty(shape, memory_format=torch.channels_last_3d) if out is None or aliased else out
        y.zero_()
        dst = out if out is not None else y
        _, _, _, ops, nops, alpha = self.epilogue.args()
        bias, gamma, beta = (p.data_ptr() for p in self.patterns)
        self.lib.scatter_conv(x.data_ptr(), n, d, h, w, self.c_in, self.w.data_ptr(), self.np,  # type: ignore[attr-defined]
                              *self.kernel, *self.stride, *self.pads, y.data_ptr(), *self.out_spatial, self.c_out,
                              dst.data_ptr(), residual.data_ptr() if residual is not None else None, bias, gamma, beta,
                              self.period, ops, nops, alpha)
        return dst
