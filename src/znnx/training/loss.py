"""Losses on the net's output before its final sigmoid / softmax (training/module.py splits it off).

- `bce`: binary cross-entropy per channel from logits (one sigmoid channel per target channel), or,
  for a two-channel softmax net with a one-channel target (ZNN's two-class boundary output: channel
  1 is the boundary), the cross-entropy of the two classes; weighted (rebalanced, masked) and
  averaged over the weighted voxels.
- `mse`: squared error of the probabilities (the net's own output activation applied), weighted.
A net without a final activation is taken to output logits; its probabilities are their sigmoid.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from znnx.errors import ModelError

Tensor = torch.Tensor
LOSSES = ("bce", "mse")
Loss = Callable[[Tensor, Tensor, Tensor], Tensor]


def head_form(head: str | None, channels: int, targets: int) -> str:
    """How the output maps to the target: "sigmoid" (a channel per target channel) or "softmax"
    (two classes for a one-channel target)."""
    if channels == targets and head != "softmax":
        return "sigmoid"
    if targets == 1 and channels == 2:
        return "softmax"
    raise ModelError(f"train: the net outputs {channels} channel(s) ending in {head or 'no activation'}, but the "
                     f"target has {targets}; a boundary net needs 1 channel (sigmoid or logits) or 2 (softmax), an "
                     f"affinity net 3")


def probability(form: str) -> Callable[[Tensor], Tensor]:
    """The net's probabilities of the target from its logits."""
    if form == "softmax":
        return lambda y: torch.softmax(y, dim=1)[:, 1:]
    return torch.sigmoid


def loss_function(kind: str, form: str) -> Loss:
    """(logits, target, weight) -> the weighted mean loss."""
    if kind not in LOSSES:
        raise ModelError(f"train: loss {kind!r} is not one of {list(LOSSES)}")

    def mean(values: Tensor, weight: Tensor) -> Tensor:
        return (values * weight).sum() / weight.sum().clamp_min(1e-12)

    if kind == "mse":
        to_probability = probability(form)
        return lambda y, t, w: mean((to_probability(y) - t) ** 2, w)
    if form == "softmax":
        return lambda y, t, w: mean(-(t * F.log_softmax(y, 1)[:, 1:] + (1 - t) * F.log_softmax(y, 1)[:, :1]), w)
    return lambda y, t, w: mean(F.binary_cross_entropy_with_logits(y, t, reduction="none"), w)
