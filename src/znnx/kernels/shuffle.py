"""A transposed convolution whose windows tile the output (kernel == stride, no pads, no dilation,
one group: a U-Net's up-convolution) in C (kernels/winograd.c `shuffle_conv`).

y[n, o, d*kd + a, h*kh + b, w*kw + c] = sum_i x[n, i, d, h, w] W[i, o, a, b, c] + bias[o]: per run
of input voxels and tap (a, b, c), one GEMM of the voxels' channels with that tap's C_in x C_out
weights, written straight into the tap's output voxels with the bias, the residual add and the
activation. The PyTorch path (one GEMM into a buffer of the output's size, then a shuffling copy or
add into the output) moved the output through memory twice more.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from znnx.kernels import implicit, winograd


class ShuffleConv:
    """One such transposed convolution (weight (C_in, C_out, kd, kh, kw)); called like
    winograd.WinogradConv: (channels-last input, *, out=None, residual=None) -> output."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, steps: Sequence[str], alpha: float,
                 scale: tuple[torch.Tensor, torch.Tensor] | None = None, slope: torch.Tensor | None = None) -> None:
        c_in, c_out = int(weight.shape[0]), int(weight.shape[1])
        self.kernel = tuple(int(k) for k in weight.shape[2:])
        self.lanes = implicit.lanes(c_out)
        self.lib = winograd._library(self.lanes)
        self.c_in, self.c_out, self.cop = c_in, c_out, winograd._round(c_out, self.lanes)
        self.w = implicit.tap_weights(weight.permute(2, 3, 4, 0, 1), self.cop)
        self.epilogue = winograd.CEpilogue(steps, alpha, c_out, self.cop, bias, scale, slope)

    def __call__(self, x: torch.Tensor, *, out: torch.Tensor | None = None,
                 residual: torch.Tensor | None = None) -> torch.Tensor:
        n, _, d, h, w = x.shape
        (kd, kh, kw) = self.kernel
        shape = (n, self.c_out, d * kd, h * kh, w * kw)
        if out is not None and not winograd._channels_last(out):
            return out.copy_(self(x, residual=residual))
        x = x.contiguous(memory_format=torch.channels_last_3d)
        y = out if out is not None else torch.empty(shape, memory_format=torch.channels_last_3d)
        if self.epilogue.add:
            assert residual is not None
            residual = residual.contiguous(memory_format=torch.channels_last_3d)
        self.lib.shuffle_conv(x.data_ptr(), n, d, h, w, self.c_in, self.w.data_ptr(), kd, kh, kw,  # type: ignore[attr-defined]
                              self.cop, y.data_ptr(), residual.data_ptr() if residual is not None else None,
                              self.c_out, *self.epilogue.args())
        return y
