"""The fused steps after a convolution (activation, residual add) as torch functions.

A conv node's `epilogue` attribute lists its steps in order ("add" adds the residual, the node's
second input; "scale" multiplies by the channel vector `scale_gamma` and adds `scale_beta`; the
others are IR activations, `alpha` for leaky_relu and elu). Every kernel and backend applies them
through these functions, in place where the caller owns the output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from znnx.ir.graph import Node

Tensor = torch.Tensor
Kernel = Callable[[Sequence[Tensor]], Tensor]
Scale = tuple[Tensor, Tensor]  # a "scale" step's gamma and beta, as (1, C, 1, 1, 1) views


def activation(op: str, alpha: float = 0.0, inplace: bool = False) -> Callable[[Tensor], Tensor]:
    """The torch function of an IR activation (`alpha` for leaky_relu and elu), optionally in place."""
    table: dict[str, Callable[[Tensor], Tensor]] = {
        "relu": lambda x: F.relu(x, inplace),
        "leaky_relu": lambda x: F.leaky_relu(x, alpha, inplace),
        "elu": lambda x: F.elu(x, alpha, inplace),
        "sigmoid": torch.sigmoid_ if inplace else torch.sigmoid,
        "tanh": torch.tanh_ if inplace else torch.tanh,
        "gelu": (lambda x: x.copy_(F.gelu(x))) if inplace else F.gelu,
        "gelu_tanh": (lambda x: x.copy_(F.gelu(x, approximate="tanh"))) if inplace else
        (lambda x: F.gelu(x, approximate="tanh")),
        "silu": lambda x: F.silu(x, inplace),
        "mish": lambda x: F.mish(x, inplace),
        "softplus": (lambda x: x.copy_(F.softplus(x))) if inplace else F.softplus,
        "erf": torch.erf_ if inplace else torch.erf,
    }
    return table[op]


def prelu(slope: Tensor, inplace: bool = False) -> Callable[[Tensor], Tensor]:
    """PReLU with one `slope` per channel (a (C,) vector) or one shared ((1,)), optionally in place
    (into the input, through a temporary: PyTorch's where(out=) on channels-last is 3x slower)."""
    return (lambda x: x.copy_(F.prelu(x, slope))) if inplace else (lambda x: F.prelu(x, slope))


def epilogue_step(step: str, alpha: float, inplace: bool = False, scale: Scale | None = None,
                  slope: Tensor | None = None) -> Callable[[Tensor, Sequence[Tensor]], Tensor]:
    """One fused step as a function of the conv output and the node's inputs (the residual is input 1);
    a "scale" step needs its `scale`, a "prelu" its `slope` ((C,))."""
    if step == "add":
        return (lambda y, x: y.add_(x[1])) if inplace else (lambda y, x: y + x[1])
    if step == "scale":
        assert scale is not None, "a scale step needs its gamma and beta"
        gamma, beta = scale
        return (lambda y, x: torch.addcmul(beta, y, gamma, out=y)) if inplace else \
            (lambda y, x: torch.addcmul(beta, y, gamma))
    if step == "prelu":
        assert slope is not None, "a prelu step needs its slopes"
        fn = prelu(slope, inplace)
    else:
        fn = activation(step, alpha, inplace)
    return lambda y, x: fn(y)


def with_epilogue(node: Node, conv: Kernel, scale: Scale | None = None, slope: Tensor | None = None) -> Kernel:
    """`conv` followed by the node's fused steps: add the residual (second input), scale, activate."""
    steps = tuple(node.attrs.get("epilogue", ()))
    if not steps:
        return conv
    alpha = float(node.attrs.get("alpha", 0.0))
    fns = [epilogue_step(step, alpha, scale=scale, slope=slope) for step in steps]

    def run(x: Sequence[Tensor]) -> Tensor:
        y = conv(x)
        for fn in fns:
            y = fn(y, x)
        return y

    return run
