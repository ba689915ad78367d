"""Random convolution cases and the float64 reference they are checked against."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from znnx import reference
from znnx.ir import ops
from znnx.ir.ops import conv_spatial

ALPHA = 0.7
ACTIVATIONS = {op: functools.partial(reference.activation, op, alpha=ALPHA) for op in sorted(ops.ACTIVATIONS)}


@dataclass(frozen=True)
class Case:
    c_in: int
    c_out: int
    kernel: tuple[int, int, int]
    spatial: tuple[int, int, int]
    pads: tuple[int, ...]
    steps: tuple[str, ...]


def arrays(case: Case, batch: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, case.c_in, *case.spatial))
    w = rng.standard_normal((case.c_out, case.c_in, *case.kernel)) / np.sqrt(case.c_in * np.prod(case.kernel))
    b = rng.standard_normal(case.c_out)
    return x, w, b


def expected(case: Case, x: np.ndarray, w: np.ndarray, b: np.ndarray, residual: np.ndarray | None) -> np.ndarray:
    y = reference.conv(x, w, b, (1, 1, 1), (1, 1, 1), case.pads, 1)
    for step in case.steps:
        y = y + residual if step == "add" else ACTIVATIONS[step](y)
    return y


def out_shape(case: Case, batch: int) -> tuple[int, ...]:
    return (batch, case.c_out, *conv_spatial(case.spatial, case.kernel, case.pads))


def channels_last(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.astype(np.float32)).contiguous(memory_format=torch.channels_last_3d)


def relative_error(actual: torch.Tensor, wanted: np.ndarray) -> float:
    return float(np.abs(actual.numpy() - wanted).max() / np.abs(wanted).max())


def steps_for(rng: np.random.Generator) -> tuple[str, ...]:
    act: Sequence[str] = [rng.choice(list(ACTIVATIONS))] if rng.random() < 0.7 else []
    add = ["add"] if rng.random() < 0.5 else []
    return tuple(add + list(act)) if rng.random() < 0.5 else tuple(list(act) + add)
