"""Direct convolution as implicit GEMMs in C (kernels/winograd.c `implicit_conv`), for the layers
where oneDNN's direct convolution is slow: few input channels (first layers).

Each output row of voxels takes, per kernel row (i, j), one GEMM whose left matrix is the input row
itself read with overlapping rows (row stride stride_w * C_in, K = kw * C_in contiguous): no im2col
copy. The input is zero-padded into a scratch buffer first where the conv pads (a pass over C_in
channels). Any stride (MONAI's strided first convs, 1 -> 16 at 96^3: oneDNN 1.9 ms, at 50 GFLOP/s), no
dilation, one group, any kernel size; offered for at most CHANNELS input channels.

Into at most four output channels (`narrow`: a MONAI U-Net's last 2 -> 2 conv at 96^3, 6.2 ms in
oneDNN, 6.7 as implicit GEMMs padded to 8 lanes) the voxels go along the vector instead
(kernels/winograd.c `narrow_conv`, stride 1): VB / C_out neighbouring voxels, all their channels, per
vector.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from znnx.ir.ops import conv_spatial
from znnx.kernels import scratch, winograd

CHANNELS = 4  # 1 -> 64 channels at 116x132x132: oneDNN 82 ms, implicit GEMM 60; at 8 in, oneDNN wins


def applicable(c_in: int, stride: Sequence[int], dilation: Sequence[int], groups: int) -> bool:
    return c_in <= CHANNELS and tuple(dilation) == (1, 1, 1) and groups == 1


def narrow(c_in: int, c_out: int) -> bool:
    """Whether `narrow_conv` takes the layer: few output channels, and the input voxels of one vector
    within two vectors' floats."""
    return c_out <= 4 and c_in * (winograd.VB // c_out) <= 2 * winograd.VB


def lanes(c_out: int) -> int:
    """16-float vectors, or 8 where padding the output channels to 16 wastes a quarter or more."""
    return winograd.lanes(0, c_out)


def tap_weights(weight: torch.Tensor, cop: int) -> torch.Tensor:
    """Weights laid out (*kernel, C_in, C_out) as the C GEMMs read them (one C_in x C_out matrix per
    tap), the output channels zero-padded to `cop`; for the implicit conv and the up-convolution."""
    w = torch.zeros((*weight.shape[:-1], cop))
    w[..., :weight.shape[-1]] = weight.detach().float()
    return w


def footprint(c_in: int, c_out: int, kernel: Sequence[int], pads: Sequence[int],
              spatial: Sequence[int]) -> tuple[int, int]:
    """(weight bytes, scratch bytes per batch item) of a layer: the weights with the output channels
    padded to the vector width, and the zero-padded input where the conv pads."""
    per_tap = winograd.VB if narrow(c_in, c_out) else winograd._round(c_out, lanes(c_out))
    weights = int(np.prod(kernel)) * c_in * per_tap * 4
    padded = int(np.prod([s + a + b for s, a, b in zip(spatial, pads[:3], pads[3:])]))
    return weights, c_in * padded * 4 if any(pads) else 0


class ImplicitConv:
    """One convolution for one input spatial shape; called like winograd.WinogradConv."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, pads: Sequence[int], steps: Sequence[str],
                 alpha: float, spatial: Sequence[int], scale: tuple[torch.Tensor, torch.Tensor] | None = None,
                 slope: torch.Tensor | None = None, stride: Sequence[int] = (1, 1, 1)) -> None:
        c_out, c_in = int(weight.shape[0]), int(weight.shape[1])
        self.kernel = tuple(int(k) for k in weight.shape[2:])
        self.stride = tuple(int(s) for s in stride)
        self.narrow = narrow(c_in, c_out) and self.stride == (1, 1, 1)
        self.lanes = winograd.VB if self.narrow else lanes(c_out)
        self.lib = winograd._library(self.lanes)
        self.c_in, self.c_out, self.cop = c_in, c_out, winograd._round(c_out, self.lanes)
        if self.narrow:
            self.w, self.perm, self.epilogue = self._spread(weight, bias, steps, alpha, scale, slope)
        else:
            self.w = tap_weights(weight.permute(2, 3, 4, 1, 0), self.cop)
            self.epilogue = winograd.CEpilogue(steps, alpha, c_out, self.cop, bias, scale, slope)
        self.pads = tuple(int(p) for p in pads)
        self.spatial = tuple(int(s) for s in spatial)
        self.padded = tuple(s + a + b for s, a, b in zip(self.spatial, self.pads[:3], self.pads[3:]))
        self.out_spatial = conv_spatial(self.spatial, self.kernel, self.pads, self.stride)

    def _spread(self, weight: torch.Tensor, bias: torch.Tensor | None, steps: Sequence[str], alpha: float,
                scale: tuple[torch.Tensor, torch.Tensor] | None,
                slope: torch.Tensor | None) -> tuple[torch.Tensor, np.ndarray, winograd.CEpilogue]:
        """`narrow_conv`'s weights (tap, C_in, lane: lane k * C_out + o holds w[o, c, tap]), shuffle
        indices (C_in, lane: k * C_in + c) and epilogue vectors spread over the lanes the same way."""
        vb, c_in, c_out = winograd.VB, self.c_in, self.c_out
        voxels = vb // c_out
        used = voxels * c_out
        channel = np.arange(used) % c_out
        taps = weight.detach().float().reshape(c_out, c_in, -1).permute(2, 1, 0)  # (tap, C_in, C_out)
        w = torch.zeros(taps.shape[0], c_in, vb)
        w[:, :, :used] = taps[:, :, torch.from_numpy(channel)]
        perm = np.zeros((c_in, vb), dtype=np.int32)
        perm[:, :used] = (np.arange(used) // c_out)[None, :] * c_in + np.arange(c_in)[:, None]
        epilogue = winograd.CEpilogue(steps, alpha, c_out, c_out, bias, scale, slope)
        epilogue.vectors = [torch.cat([v[torch.from_numpy(channel)], torch.zeros(vb - used)]) for v in epilogue.vectors]
        return w.contiguous(), perm, epilogue

    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        if not any(self.pads):
            return x
        n = x.shape[0]
        buffer = scratch.buffer("pad", n * self.c_in * int(np.prod(self.padded)))
        xp = buffer.view(n, *self.padded, self.c_in).permute(0, 4, 1, 2, 3)
        xp.zero_()
        (d, h, w), (pd, ph, pw) = self.spatial, self.pads[:3]
        xp[:, :, pd:pd + d, ph:ph + h, pw:pw + w] = x
        return xp

    def __call__(self, x: torch.Tensor, *, out: torch.Tensor | None = None,
                 residual: torch.Tensor | None = None) -> torch.Tensor:
        if out is not None and not winograd._channels_last(out):
            return out.copy_(self(x, residual=residual))
        n = x.shape[0]
        xp = self._padded(x.contiguous(memory_format=torch.channels_last_3d))
        y = out if out is not None else torch.empty((n, self.c_out, *self.out_spatial),
                                                    memory_format=torch.channels_last_3d)
        if self.epilogue.add:
            assert residual is not None
            residual = residual.contiguous(memory_format=torch.channels_last_3d)
        (d, h, w), (kd, kh, kw), (do, ho, wo) = self.padded, self.kernel, self.out_spatial
        if self.narrow:
            self.lib.narrow_conv(xp.data_ptr(), n, d, h, w, self.c_in, self.w.data_ptr(),  # type: ignore[attr-defined]
                                 self.perm.ctypes.data, kd, kh, kw, y.data_ptr(),
                                 residual.data_ptr() if residual is not None else None, do, ho, wo, self.c_out,
                                 *self.epilogue.args())
            return y
        self.lib.implicit_conv(xp.data_ptr(), n, d, h, w, self.c_in, self.w.data_ptr(), kd, kh, kw,  # type: ignore[attr-defined]
                               *self.stride, self.cop, y.data_ptr(),
                               residual.data_ptr() if residual is not None else None, do, ho, wo, self.c_out,
                               *self.epilogue.args())
        return y
