"""Convolution algorithms as values: a kind and a tile size, never a string decoded by its parts.

- direct: the device library's own convolution (oneDNN, cuDNN); `tile` 0.
- implicit: znnx's direct convolution as implicit GEMMs (kernels/implicit.py, CPU); `tile` 0.
- scatter: a conv into few channels as one GEMM over every tap per input voxel, each tap's sums added
  into its output voxel (kernels/scatter.py, CPU); `tile` 0.
- winograd: F(m, r) with `tile` = m output voxels per transformed axis (2 or 4).
- fft: overlap-save FFT convolution with `tile` = the FFT size per transformed axis.

`name` is how users and files spell an algorithm ("direct", "winograd2", "winograd4", "fft16",
"fft24", ...; plain "fft" forces the backend's FFT for a layer, whatever its size); `tolerance` the
largest error against direct (max |y - y_direct| / max |y_direct|, fp32) the autotuner accepts, which
the kernel tests pin down.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from znnx.errors import GraphError

Kind = Literal["direct", "implicit", "scatter", "winograd", "fft"]
NAMES = ("direct", "implicit", "scatter", "winograd2", "winograd4", "fft")
WINOGRAD_TOLERANCE = {2: 1e-5, 4: 1e-4}
FFT_TOLERANCE = 1e-5
IMPLICIT_TOLERANCE = 1e-5  # the direct sums in another order
SCATTER_TOLERANCE = 1e-5  # the direct sums in another order


@dataclass(frozen=True)
class Algorithm:
    kind: Kind
    tile: int = 0

    @property
    def name(self) -> str:
        return self.kind if self.kind in ("direct", "implicit", "scatter") else f"{self.kind}{self.tile}"

    @property
    def tolerance(self) -> float:
        if self.kind == "winograd":
            return WINOGRAD_TOLERANCE[self.tile]
        return {"fft": FFT_TOLERANCE, "implicit": IMPLICIT_TOLERANCE, "scatter": SCATTER_TOLERANCE}.get(self.kind, 0.0)

    def outputs(self, k: int) -> int:
        """Output voxels one tile covers along an axis of kernel size `k` (1 for the direct kernels,
        which have no tiles; 1 along an axis with k = 1, which no transform tiles)."""
        if self.kind == "winograd" and k > 1:
            return self.tile
        if self.kind == "fft" and k > 1:
            return max(self.tile, k) - k + 1
        return 1

    def __str__(self) -> str:
        return self.name


DIRECT = Algorithm("direct")
IMPLICIT = Algorithm("implicit")
SCATTER = Algorithm("scatter")


def winograd(m: int) -> Algorithm:
    return Algorithm("winograd", m)


def fft(size: int) -> Algorithm:
    return Algorithm("fft", size)


def known(name: str) -> bool:
    """Whether `name` spells an algorithm: one of NAMES, or an FFT of a given size (fft16, fft24)."""
    return name in NAMES or re.fullmatch(r"fft[1-9][0-9]*", name) is not None


def by_name(name: str, candidates: tuple[Algorithm, ...]) -> Algorithm | None:
    """The candidate spelled `name` ("fft": the backend's FFT, any size), None if it does not apply;
    unknown names are refused."""
    if not known(name):
        raise GraphError(f"autotune: unknown algorithm {name!r}; use one of {['auto', *NAMES]} (or fft16, fft24)")
    return next((a for a in candidates if a.name == name or (name == "fft" and a.kind == "fft")), None)
