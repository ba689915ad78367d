"""ELU and PReLU in place in C (kernels/activation.c), for the convs whose ELU or PReLU oneDNN cannot
fuse and for the PReLUs no conv took (after a scale step, or after another op).

PyTorch has no ELU post-op for its oneDNN convolution, so an ELU runs as a second pass over the
conv's output; PyTorch's in-place elu_ computes exp at 6.4 ms for 8 channels at 106^3 (9.5 M
floats, 2 threads) where a pass over that memory takes about 1.5 ms. This kernel is that pass.
PyTorch's in-place PReLU on a channels-last tensor (`torch.where(x > 0, x, x * slope, out=x)`) took
60 ms for 32 channels at 64^3; the C pass about 2.
"""

from __future__ import annotations

import ctypes
import functools
import math
from collections.abc import Callable

import torch

from znnx.kernels import native


@functools.cache
def _library() -> ctypes.CDLL:
    from importlib.resources import files

    lib = native.load("activation", native.with_vectors(files("znnx.kernels").joinpath("activation.c").read_text()))
    lib.elu_inplace.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_float]
    lib.elu_inplace.restype = None
    i, p = ctypes.c_ssize_t, ctypes.c_void_p
    lib.prelu_inplace.argtypes = [p, i, i, i, p, p, i]
    lib.prelu_inplace.restype = None
    return lib


def elu_(alpha: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """ELU with `alpha` in place on a contiguous (in any memory format) fp32 tensor."""
    lib = _library()

    def run(y: torch.Tensor) -> torch.Tensor:
        if y.dtype != torch.float32 or not (y.is_contiguous() or y.is_contiguous(memory_format=torch.channels_last_3d)):
            return torch.nn.functional.elu_(y, alpha)
        lib.elu_inplace(y.data_ptr(), y.numel(), alpha)
        return y

    return run


def prelu_(slope: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """PReLU with `slope` ((C,) or one shared (1,)) in place on a contiguous or channels-last fp32
    tensor (N, C, *spatial); PyTorch's for any other."""
    lib = _library()
    slope = slope.detach().float().reshape(-1).contiguous()

    def run(y: torch.Tensor) -> torch.Tensor:
        c = y.shape[1]
        slopes = slope.expand(c).contiguous()
        last = y.dim() == 5 and y.is_contiguous(memory_format=torch.channels_last_3d) and not y.is_contiguous()
        if y.dtype != torch.float32 or not (y.is_contiguous() or last):
            return y.copy_(torch.nn.functional.prelu(y, slope))
        period = math.lcm(c, 16)
        pattern = slopes.repeat(period // c)
        inner = 1 if last else y[0, 0].numel()
        lib.prelu_inplace(y.data_ptr(), y.numel() // (c * inner), c, inner, slopes.data_ptr(), pattern.data_ptr(),
                          period)
        return y

    return run
