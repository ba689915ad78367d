"""ELU in place in C (kernels/activation.c), for the convs whose ELU oneDNN cannot fuse.

PyTorch has no ELU post-op for its oneDNN convolution, so an ELU runs as a second pass over the
conv's output; PyTorch's in-place elu_ computes exp at 6.4 ms for 8 channels at 106^3 (9.5 M
floats, 2 threads) where a pass over that memory takes about 1.5 ms. This kernel is that pass.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable

import torch

from znnx.kernels import native


@functools.cache
def _library() -> ctypes.CDLL:
    from importlib.resources import files

    lib = native.load("activation", native.with_vectors(files("znnx.kernels").joinpath("activation.c").read_text()))
    lib.elu_inplace.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_float]
    lib.elu_inplace.restype = None
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
