"""The fused training-mode BatchNorm + activation kernel against PyTorch's BatchNorm and activation:
outputs, running statistics and the gradients of the input, scale and shift."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.nets import rel_error
from znnx.kernels.batchnorm import batchnorm_activation

ACTS = {None: lambda y: y, "relu": F.relu, "leaky_relu": lambda y: F.leaky_relu(y, 0.1),
        "elu": lambda y: F.elu(y, 0.7), "sigmoid": torch.sigmoid, "tanh": torch.tanh}
ALPHA = {"leaky_relu": 0.1, "elu": 0.7}


@pytest.mark.parametrize("act", list(ACTS), ids=str)
@pytest.mark.parametrize("shape", [(2, 28, 5, 9, 7), (1, 3, 4, 4, 33), (3, 64, 2, 6, 5)])
def test_matches_pytorch(act: str | None, shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(shape, generator=gen) * 3 + 1).contiguous(memory_format=torch.channels_last_3d)
    gamma, beta = torch.rand(shape[1], generator=gen) + 0.5, torch.randn(shape[1], generator=gen)
    g = torch.randn(shape, generator=gen)
    results = []
    for fused in (True, False):
        leaves = [t.clone().requires_grad_() for t in (x, gamma, beta)]
        mean, var = torch.zeros(shape[1]), torch.ones(shape[1])
        if fused:
            y = batchnorm_activation(*leaves, mean, var, 0.1, 1e-5, act, ALPHA.get(act, 0.0))
        else:
            y = ACTS[act](F.batch_norm(leaves[0], mean, var, leaves[1], leaves[2], True, 0.1, 1e-5))
        y.backward(g)
        results.append([y.detach(), mean, var, *(leaf.grad for leaf in leaves)])
    for name, a, e in zip(("y", "mean", "var", "dx", "dgamma", "dbeta"), *results):
        assert rel_error(a, e) < 1e-5, (name, rel_error(a, e))
