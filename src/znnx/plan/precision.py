"""The numeric precisions a net can run in and the accuracy each keeps; which devices run which is
each backend's `PRECISIONS` (backends/).

Weights and activations are stored in `dtype`; convolutions accumulate in fp32 on every device
(oneDNN and cuDNN both do). `tolerance` is the largest max |y - y_fp32| / max |y_fp32| the tests
allow a whole benchmark-style net (BatchNorm folded, ReLU, residual adds, ~10 convs) in this
precision; README's table gives the measured values.

- fp32: the reference; every algorithm (direct, Winograd, FFT) is available.
- tf32 (CUDA): fp32 storage, convolutions on tensor cores with operands rounded to 10 mantissa bits.
- fp16 (CUDA): half storage and tensor cores; 5 exponent bits, so activations beyond 65504 overflow.
- bf16 (CPU with AVX512-BF16 or AMX, and CUDA): fp32's range with 7 mantissa bits. On the CPU only
  oneDNN's direct convolution runs it (about 2.8x its fp32 speed on AVX512-BF16 hardware); znnx's
  Winograd and FFT kernels are fp32 kernels. CPU fp16 is not offered: PyTorch's CPU fp16
  convolution measured 80x slower than fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from znnx.errors import DeviceError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Precision:
    name: str
    dtype: str
    element_bytes: int
    tolerance: float

    @property
    def torch_dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, self.dtype)  # type: ignore[no-any-return]


PRECISIONS = {p.name: p for p in (
    Precision("fp32", "float32", 4, 1e-5),
    Precision("tf32", "float32", 4, 1e-2),
    Precision("fp16", "float16", 2, 1e-2),
    Precision("bf16", "bfloat16", 2, 5e-2),
)}


def resolve(name: str, device_kind: str, supported: tuple[str, ...]) -> Precision:
    """The precision called `name`, checked against the `supported` names of the backend of
    `device_kind` that will run it."""
    if name not in PRECISIONS:
        raise DeviceError(f"precision: unknown precision {name!r}; use one of {list(PRECISIONS)}")
    if name not in supported:
        raise DeviceError(f"precision: {name} does not run on {device_kind}; on {device_kind} use one of "
                          f"{list(supported)}")
    return PRECISIONS[name]
