"""float32 -> uint8 in one pass in C (kernels/convert.c), for the volume runner's uint8 outputs.

NumPy's `rint(clip(x * 255, 0, 255)).astype(uint8)` is four passes over a block's float32 values
(a 128^3 block: 1.5 ms alone, about 2.6 ms per block in a volume run whose reader and writer
threads share the cores and memory); this is one. Where no C compiler is at hand, NumPy's passes
run instead; both give the same bytes for finite values.
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np

from znnx.errors import KernelUnavailable
from znnx.kernels import native


@functools.cache
def _library() -> ctypes.CDLL:
    from importlib.resources import files

    lib = native.load("convert", files("znnx.kernels").joinpath("convert.c").read_text())
    lib.to_uint8.argtypes = [ctypes.c_void_p, *[ctypes.c_ssize_t] * 7, ctypes.c_void_p]
    lib.to_uint8.restype = None
    return lib


def to_uint8_numpy(values: np.ndarray) -> np.ndarray:
    """The reference: [0, 1] to 0..255, rounded half to even, clipped; `values` is overwritten."""
    np.multiply(values, np.float32(255), out=values)
    np.clip(values, 0.0, 255.0, out=values)
    np.rint(values, out=values)
    return values.astype(np.uint8)


def to_uint8(values: np.ndarray) -> np.ndarray:
    """`values` (float32, at most 4 axes, the last contiguous: a slice of a (C, D, H, W) array) as
    uint8 in a new C-contiguous array: [0, 1] to 0..255, rounded half to even, clipped, NaN to 0.
    Other arrays take NumPy's passes and may be overwritten."""
    shape = (1,) * (4 - values.ndim) + values.shape
    strides = (0,) * (4 - values.ndim) + values.strides
    if (values.dtype != np.float32 or not 1 <= values.ndim <= 4 or values.size == 0 or strides[3] != 4
            or any(s % 4 for s in strides)):
        return to_uint8_numpy(values)
    try:
        lib = _library()
    except KernelUnavailable:
        return to_uint8_numpy(values)
    out = np.empty(values.shape, np.uint8)
    lib.to_uint8(values.ctypes.data, *shape, *(s // 4 for s in strides[:3]), out.ctypes.data)
    return out
