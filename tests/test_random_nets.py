"""Random U-Net-like PyTorch nets, the kind users bring, compiled with znnx and checked against PyTorch
eager: random depth, kernels ((1,3,3), 3^3, 5^3, (3,1,1), 1^3), valid or same pads, dilation, max /
average / strided pooling (2^3 or (1,2,2) kernels, or 3^3 convs of stride 2), nearest / trilinear /
transposed upsampling (kernel = stride, or 3 with output padding), concat or add merges with centre
crops, BatchNorm, every activation the IR knows (PReLU too), 1-32 channels, 1-4 input channels, batches
of 1-2, odd anisotropic sizes."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

import znnx
from tests.nets import rel_error
from znnx.bench.models import randomize

ACTIVATIONS = (nn.ReLU, nn.ELU, lambda: nn.LeakyReLU(0.1), nn.Sigmoid, nn.Tanh, nn.Identity, nn.PReLU, nn.GELU,
               lambda: nn.GELU(approximate="tanh"), nn.SiLU, nn.Mish, nn.Softplus)


def _crop(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    d = [(a - b) // 2 for a, b in zip(x.shape[2:], like.shape[2:])]
    return x[:, :, d[0]:d[0] + like.shape[2], d[1]:d[1] + like.shape[3], d[2]:d[2] + like.shape[4]]


class _Level(nn.Module):
    def __init__(self, rng: random.Random, c_in: int, depth: int, aniso: bool, valid: bool) -> None:
        super().__init__()
        width = rng.choice([1, 2, 3, 4, 6, 8, 12, 16, 24, 32])
        self.pre, self.width, self.depth = self._convs(rng, c_in, width, aniso, valid), width, depth
        if not depth:
            return
        pool = (1, 2, 2) if aniso else (2, 2, 2)
        k3 = tuple(3 if p == 2 else 1 for p in pool)
        self.down = rng.choice([lambda: nn.MaxPool3d(pool), lambda: nn.AvgPool3d(pool),
                                lambda: nn.Conv3d(width, width, pool, stride=pool),
                                lambda: nn.Conv3d(width, width, k3, stride=pool, padding=tuple(k // 2 for k in k3))])()
        self.inner = _Level(rng, width, depth - 1, aniso, valid)
        below = self.inner.width
        self.up = rng.choice([
            lambda: nn.ConvTranspose3d(below, width, pool, stride=pool),
            lambda: nn.ConvTranspose3d(below, width, k3, stride=pool, padding=tuple(k // 2 for k in k3),
                                       output_padding=tuple(p - 1 for p in pool)),
            lambda: nn.Sequential(nn.Upsample(scale_factor=pool, mode=rng.choice(["nearest", "trilinear"])),
                                  nn.Conv3d(below, width, 1))])()
        self.concat = rng.random() < 0.5
        self.post = self._convs(rng, 2 * width if self.concat else width, width, aniso, valid)

    @staticmethod
    def _convs(rng: random.Random, c_in: int, width: int, aniso: bool, valid: bool) -> nn.Sequential:
        layers: list[nn.Module] = []
        for i in range(rng.choice([1, 2])):
            kernel = rng.choice([(3, 3, 3), (1, 3, 3), (1, 1, 1), (3, 1, 1), (1, 5, 5) if aniso else (5, 5, 5)])
            pads, dilation = (0, 0, 0) if valid else tuple(k // 2 for k in kernel), 1
            if not valid and kernel == (3, 3, 3) and rng.random() < 0.15:
                pads, dilation = (2, 2, 2), 2
            layers.append(nn.Conv3d(c_in if i == 0 else width, width, kernel, padding=pads, dilation=dilation,
                                    bias=rng.random() < 0.8))
            if rng.random() < 0.4:
                layers.append(nn.BatchNorm3d(width))
            layers.append(rng.choice(ACTIVATIONS)())
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre(x)
        if not self.depth:
            return x
        y = self.up(self.inner(self.down(x)))
        skip = _crop(x, y)
        return self.post(torch.cat([skip, y], 1) if self.concat else skip + y)


class _Net(nn.Module):
    def __init__(self, rng: random.Random, c_in: int, depth: int, aniso: bool, valid: bool) -> None:
        super().__init__()
        self.level = _Level(rng, c_in, depth, aniso, valid)
        self.head = nn.Conv3d(self.level.width, rng.choice([1, 2, 3]), 1)
        self.final = rng.choice(["softmax", "sigmoid", "none"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(self.level(x))
        return torch.softmax(y, 1) if self.final == "softmax" else torch.sigmoid(y) if self.final == "sigmoid" else y


def _case(seed: int) -> tuple[nn.Module, tuple[int, ...]]:
    rng = random.Random(seed)
    aniso, valid, depth, c_in = rng.random() < 0.3, rng.random() < 0.4, rng.choice([0, 1, 2]), rng.choice([1, 2, 4])
    net = randomize(_Net(rng, c_in, depth, aniso, valid), seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.PReLU):
                module.weight.uniform_(-0.5, 0.5)
    sizes = [rng.randint(3, 6) * 2**depth for _ in range(3)]
    if aniso:
        sizes[0] = rng.randint(4, 12)
    margin = [26 if valid and not (aniso and i == 0) else 0 for i in range(3)]
    return net, (rng.choice([1, 2]), c_in, *(s + m for s, m in zip(sizes, margin)))


@pytest.mark.parametrize("seed", [0, 4, 5, 10, 12, 22, 30, 506])
def test_random_net_matches_pytorch(seed: int) -> None:
    """Seeds chosen so that together they hold every op above (0, 4 and 10 cover them all)."""
    net, shape = _case(seed)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        want = net(x).numpy()
    got = znnx.compile(znnx.load(net, input_shape=shape[1:]))(x.numpy())
    assert got.shape == want.shape
    assert rel_error(got, want) < 1e-4, seed
