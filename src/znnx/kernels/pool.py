"""Max and average pooling on channels-last tensors in C (kernels/pool.c): one pass over the input.

PyTorch's CPU max_pool3d on channels-last 3D tensors runs at a fraction of memory bandwidth (65 ms
for the original U-Net's first pool, 64 channels at 112x128x128, vs 31-35 ms here; with its fresh
output paged in on every patch it took 10-13% of the residual and original nets), and its
avg_pool3d is slower still (an anisotropic residual U-Net of 16-40 channels: 46 ms of avg_pool3d
against 2.2 ms in OpenVINO); this kernel reads every input voxel once per window that holds it and
writes each output once, into the arena slot the plan gives it, in vectors of 16 channels, or of 4
for narrow nets (8-12 channels).
"""

from __future__ import annotations

import ctypes
import functools
import math
from collections.abc import Sequence

import numpy as np
import torch

from znnx.kernels import native


@functools.cache
def _library() -> ctypes.CDLL:
    from importlib.resources import files

    lib = native.load("pool", files("znnx.kernels").joinpath("pool.c").read_text())
    i, p, flag = ctypes.c_ssize_t, ctypes.c_void_p, ctypes.c_int
    lib.pool.argtypes = [flag, flag, p, i, i, i, i, i, p, p, p, p, p, p, p, i, i, i, i, i, i]
    lib.pool.restype = None
    return lib


class Pool:
    """Max (`average` False) or average pooling with `kernel`, `stride`, `pads` (6: leading d, h, w,
    then trailing) and `dilation` to `out_spatial`. Windows reaching past the input (pads, ceil mode)
    see only the input voxels they cover; an average divides by their number, or with
    `count_include_pad` by the number of taps inside the padded input. With a `block`, the output is
    written as its max-pooling fragments (ir/ops.py `fragment`: prod(block) times the batch,
    `out_spatial` / block each)."""

    def __init__(self, kernel: Sequence[int], stride: Sequence[int], pads: Sequence[int],
                 out_spatial: Sequence[int], dilation: Sequence[int] = (1, 1, 1),
                 block: Sequence[int] = (1, 1, 1), average: bool = False, count_include_pad: bool = False) -> None:
        self.lib = _library()
        self.flags = (int(average), int(count_include_pad))
        pads = (*pads, 0, 0, 0) if len(pads) == 3 else tuple(pads)
        self.shape = [np.array(v, dtype=np.int32) for v in (kernel, stride, pads[:3], pads[3:], dilation, block)]
        self.out_spatial = tuple(int(s) for s in out_spatial)
        self.block = tuple(int(b) for b in block)
        if any(s % b for s, b in zip(self.out_spatial, self.block)):
            raise ValueError(f"kernels.pool: output {self.out_spatial} is not a multiple of the block {self.block}")

    def __call__(self, x: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
        """The pooled `x` (any layout), channels-last, in `out` if given (channels-last)."""
        x = x.contiguous(memory_format=torch.channels_last_3d)
        n, c = x.shape[:2]
        shape = (n * math.prod(self.block), c, *(s // b for s, b in zip(self.out_spatial, self.block)))
        y = out if out is not None else torch.empty(shape, memory_format=torch.channels_last_3d)
        if tuple(y.shape) != shape or not y.permute(0, 2, 3, 4, 1).is_contiguous():
            raise ValueError(f"kernels.pool: out must be a channels-last {shape}, got {tuple(y.shape)} with strides "
                             f"{y.stride()}")
        self._run(x, y.data_ptr(), n, 0, shape[2])
        return y

    def into(self, x: torch.Tensor, whole: torch.Tensor, item: int, plane: int) -> None:
        """Write the fragments of `x` (one batch entry: a depth slab of a larger input, `out_spatial`
        its pooled size) into `whole`, the channels-last fragments of that larger output, as batch
        entry `item` of each offset from fragment plane `plane` on."""
        x = x.contiguous(memory_format=torch.channels_last_3d)
        entries, c, depth, *rest = whole.shape
        slab = self.out_spatial[0] // self.block[0]
        fragments = math.prod(self.block)
        if (x.shape[0] != 1 or x.shape[1] != c or tuple(rest) != tuple(s // b for s, b in zip(self.out_spatial[1:],
                                                                                             self.block[1:]))
                or entries % fragments or not 0 <= item < entries // fragments or plane + slab > depth
                or not whole.permute(0, 2, 3, 4, 1).is_contiguous()):
            raise ValueError(f"kernels.pool: fragments of a {tuple(x.shape)} slab ({self.out_spatial} pooled) do "
                             f"not fit entry {item}, planes {plane}..{plane + slab} of a channels-last "
                             f"{tuple(whole.shape)}")
        self._run(x, whole[0, 0, plane].data_ptr(), entries // fragments, item, depth)

    def _run(self, x: torch.Tensor, y: int, entries: int, item: int, planes: int) -> None:
        """The C kernel on channels-last `x` into the fragments at address `y` (kernels/pool.c: `entries`
        per offset from `item` on, `planes` per entry)."""
        n, c, d, h, w = x.shape
        k, s, p, q, dl, b = (a.ctypes.data for a in self.shape)
        self.lib.pool(*self.flags, x.data_ptr(), n, d, h, w, c, k, s, p, q, dl, b,  # type: ignore[attr-defined]
                      y, *self.out_spatial, entries, item, planes)
