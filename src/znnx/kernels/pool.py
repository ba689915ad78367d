"""Max pooling on channels-last tensors in C (kernels/pool.c): one pass over the input.

PyTorch's CPU max_pool3d on channels-last 3D tensors runs at a fraction of memory bandwidth (65 ms
for the original U-Net's first pool, 64 channels at 112x128x128, vs 31-35 ms here; with its fresh
output paged in on every patch it took 10-13% of the residual and original nets); this kernel
reads every input voxel once per window that holds it and writes each output once, into the
arena slot the plan gives it.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Sequence

import numpy as np
import torch

from znnx.kernels import native


@functools.cache
def _library() -> ctypes.CDLL:
    from importlib.resources import files

    lib = native.load("pool", files("znnx.kernels").joinpath("pool.c").read_text())
    i, p = ctypes.c_ssize_t, ctypes.c_void_p
    lib.max_pool.argtypes = [p, i, i, i, i, i, p, p, p, p, p, i, i, i]
    lib.max_pool.restype = None
    return lib


class MaxPool:
    """Max pooling with `kernel`, `stride`, leading `pads` (d, h, w) and `dilation` to
    `out_spatial`; windows reaching past the input (trailing pads, ceil mode) see only the input
    voxels they cover."""

    def __init__(self, kernel: Sequence[int], stride: Sequence[int], pads: Sequence[int],
                 out_spatial: Sequence[int], dilation: Sequence[int] = (1, 1, 1)) -> None:
        self.lib = _library()
        self.shape = [np.array(v[:3], dtype=np.int32) for v in (kernel, stride, pads, dilation)]
        self.out_spatial = tuple(int(s) for s in out_spatial)

    def __call__(self, x: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
        """The pooled `x` (any layout), channels-last, in `out` if given (channels-last)."""
        x = x.contiguous(memory_format=torch.channels_last_3d)
        n, c, d, h, w = x.shape
        y = out if out is not None else torch.empty((n, c, *self.out_spatial), memory_format=torch.channels_last_3d)
        if not y.permute(0, 2, 3, 4, 1).is_contiguous():
            raise ValueError(f"kernels.pool: out must be channels-last, got strides {y.stride()}")
        k, s, p, dl = (a.ctypes.data for a in self.shape)
        self.lib.max_pool(x.data_ptr(), n, d, h, w, c, k, s, p, dl, y.data_ptr(), *self.out_spatial)  # type: ignore[attr-defined]
        return y
