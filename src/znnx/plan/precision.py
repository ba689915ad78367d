"""The numeric precisions a net can run in, the devices that run each, and the accuracy it keeps.

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
    devices: tuple[str, ...]
    tolerance: float

    @property
    def torch_dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, self.dtype)  # type: ignore[no-any-return]


PRECISIONS = {p.name: p for p in (
    Precision("fp32", "float32", 4, ("cpu", "cuda"), 1e-5),
    Precision("tf32", "float32", 4, ("cuda",), 1e-2),
    Precision("fp16", "float16", 2, ("cuda",), 1e-2),
    Precision("bf16", "bfloat16", 2, ("cpu", "cuda"), 5e-2),
)}


def resolve(name: str, device_type: str) -> Precision:
    """The precision called `name`, checked against the device that will run it."""
    if name not in PRECISIONS:
        raise DeviceError(f"precision: unknown precision {name!r}; use one of {list(PRECISIONS)}")
    precision = PRECISIONS[name]
    if device_type not in precision.devices:
        on = " or ".join(precision.devices)
        raise DeviceError(f"precision: {name} runs on {on} only, not on {device_type}; on {device_type} use one of "
                          f"{[p for p, v in PRECISIONS.items() if device_type in v.devices]}")
    if name == "bf16" and device_type == "cpu" and not _cpu_bf16():
        raise DeviceError("precision: bf16 on this CPU would be emulated (no AVX512-BF16 or AMX instructions, "
                          "so oneDNN runs it slower than fp32); use precision fp32")
    return precision


def _cpu_bf16() -> bool:
    import torch

    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
