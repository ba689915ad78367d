"""ZNN's weight init rules (`init` / `init_args` of a .znn edge), for fresh weights of any net.

- zero; constant (args: value, default 0); uniform (low, high; default -0.1, 0.1); gaussian (mean,
  std; default 0, 0.01); bernoulli (p; default 0.5);
- xavier: uniform in +-sqrt(3 / fan_in); msra: normal with std sqrt(2 / fan_in) (He et al.), where
  fan_in is the product of every axis after the first (input channels times the kernel's voxels).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

RULES = frozenset({"zero", "constant", "uniform", "gaussian", "bernoulli", "xavier", "msra"})


def draw(rule: str, args: Sequence[float], shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A float64 array of `shape` drawn by `rule` (one of RULES; the caller names the culprit of
    an unknown one)."""
    fan_in = math.prod(shape[1:])
    if rule == "zero":
        return np.zeros(shape)
    if rule == "constant":
        return np.full(shape, args[0] if args else 0.0)
    if rule == "uniform":
        low, high = args[:2] if len(args) >= 2 else (-0.1, 0.1)
        return rng.uniform(low, high, shape)
    if rule == "gaussian":
        mean, std = args[:2] if len(args) >= 2 else (0.0, 0.01)
        return rng.normal(mean, std, shape)
    if rule == "bernoulli":
        return (rng.random(shape) < (args[0] if args else 0.5)).astype(np.float64)
    if rule == "xavier":
        bound = math.sqrt(3.0 / fan_in)
        return rng.uniform(-bound, bound, shape)
    return rng.normal(0.0, math.sqrt(2.0 / fan_in), shape)
