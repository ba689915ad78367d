"""Small PyTorch nets with the structures znnx must import: valid and same U-Nets, residual blocks,
anisotropic kernels, transposed-conv upsampling, pooling, crop+concat skips, 2D and 1D nets.

Every builder takes a seed; widths and BatchNorm statistics are drawn from it so tests see
different shapes, and BatchNorm layers hold non-trivial running statistics.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from znnx.bench.models import encode


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random weights and BatchNorm statistics (the defaults would make BN an identity)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(torch.rand(module.num_features, generator=generator) * 0.4 - 0.2)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(module.num_features, generator=generator) * 0.2 - 0.1)
    return model.eval()


def _block(c_in: int, c_out: int, padding: int | tuple[int, ...], kernel: int | tuple[int, ...] = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, kernel, padding=padding), nn.BatchNorm3d(c_out), nn.ELU(),
        nn.Conv3d(c_out, c_out, kernel, padding=padding), nn.BatchNorm3d(c_out), nn.ELU(),
    )


class ValidUNet(nn.Module):
    """The 3D U-Net paper's shape: valid convs, max pool, transposed conv, centre crop + concat."""

    def __init__(self, width: int, levels: int = 2, skip_first: bool = True) -> None:
        super().__init__()
        self.skip_first = skip_first
        widths = [width * 2**i for i in range(levels)]
        self.down = nn.ModuleList(_block(c_in, c, 0) for c_in, c in zip([1, *widths[:-2]], widths[:-1]))
        self.bottom = _block(widths[-2], widths[-1], 0)
        self.up = nn.ModuleList(nn.ConvTranspose3d(c, c // 2, 2, stride=2) for c in reversed(widths[1:]))
        self.up_blocks = nn.ModuleList(_block(c, c // 2, 0) for c in reversed(widths[1:]))
        self.head = nn.Conv3d(widths[0], 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, skips = encode(nn.ModuleList([*self.down, self.bottom]), x)
        for up, block, skip in zip(self.up, self.up_blocks, reversed(skips)):
            x = up(x)
            d, h, w = ((s - t) // 2 for s, t in zip(skip.shape[2:], x.shape[2:]))
            cropped = skip[:, :, d:d + x.shape[2], h:h + x.shape[3], w:w + x.shape[4]]
            x = block(torch.cat([cropped, x] if self.skip_first else [x, cropped], dim=1))
        return torch.sigmoid(self.head(x))


class SymmetricUNet(nn.Module):
    """Same-padded convs, additive skips."""

    def __init__(self, width: int, levels: int = 3) -> None:
        super().__init__()
        widths = [width * 2**i for i in range(levels)]
        self.down = nn.ModuleList(_block(c_in, c, 1) for c_in, c in zip([1, *widths[:-2]], widths[:-1]))
        self.bottom = _block(widths[-2], widths[-1], 1)
        self.up = nn.ModuleList(nn.ConvTranspose3d(c, c // 2, 2, stride=2) for c in reversed(widths[1:]))
        self.up_blocks = nn.ModuleList(_block(c // 2, c // 2, 1) for c in reversed(widths[1:]))
        self.head = nn.Conv3d(widths[0], 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, skips = encode(nn.ModuleList([*self.down, self.bottom]), x)
        for up, block, skip in zip(self.up, self.up_blocks, reversed(skips)):
            x = block(up(x) + skip)
        return torch.sigmoid(self.head(x))


class ResidualNet(nn.Module):
    """Anisotropic residual U-Net level pair after Lee et al. 2017: (1,3,3) convs, residual module,
    (1,2,2) pooling and upsampling, additive skip, (1,5,5) embedding."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.embed = nn.Conv3d(1, width, (1, 5, 5), padding=(0, 2, 2))
        self.pre = nn.Conv3d(width, width, (1, 3, 3), padding=(0, 1, 1))
        self.res = _block(width, width, 1)
        self.res[-1] = nn.Identity()
        self.post = nn.Conv3d(width, width, (1, 3, 3), padding=(0, 1, 1))
        self.down = nn.Conv3d(width, 2 * width, (1, 3, 3), padding=(0, 1, 1))
        self.up = nn.ConvTranspose3d(2 * width, width, (1, 2, 2), stride=(1, 2, 2))
        self.head = nn.Conv3d(width, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.elu(self.pre(self.embed(x)))
        x = self.post(F.elu(self.res(x) + x))
        y = F.elu(self.down(F.max_pool3d(x, (1, 2, 2))))
        x = self.up(y) + x
        return torch.sigmoid(self.head(x))


class KitchenSink(nn.Module):
    """Strided, dilated and grouped convs, asymmetric pads, ceil-mode pooling, resizes, softmax."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.a = nn.Conv3d(2, width, (3, 1, 5), stride=(1, 2, 1), padding=(1, 0, 2))
        self.b = nn.Conv3d(width, 2 * width, 3, dilation=(2, 1, 1), groups=2, padding=(2, 1, 1))
        self.c = nn.ConvTranspose3d(2 * width, width, 3, stride=2, padding=1, output_padding=1)
        self.bn = nn.BatchNorm3d(width)
        self.d = nn.Conv3d(width, 4, 1)
        self.scale = nn.Parameter(torch.rand(1, 4, 1, 1, 1) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.a(F.pad(x, (1, 0, 0, 2, 1, 1))), 0.2)
        x = torch.tanh(self.b(x))
        x = F.avg_pool3d(x, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        x = F.relu(self.bn(self.c(F.pad(x, (1, 1, 1, 1, 1, 1), mode="replicate"))))
        x = F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")
        x = F.max_pool3d(F.pad(x, (2, 2, 1, 1, 0, 0), mode="reflect"), (1, 3, 3), stride=2, ceil_mode=True)
        x = F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False)
        x = self.d(x) * self.scale / 2.0 + 0.5
        return torch.softmax(x, dim=1)


class Net2d(nn.Module):
    """A 2D U-Net level: the IR lifts it to 3D with a unit depth axis."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU())
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.head = nn.Conv2d(2 * width, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.a(x)
        x = self.up(self.b(F.max_pool2d(skip, 2)))
        x = torch.cat([skip, F.interpolate(x, scale_factor=1, mode="bilinear", align_corners=True)], 1)
        return torch.sigmoid(self.head(x))


class Net1d(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.a = nn.Conv1d(2, width, 5, padding=2)
        self.b = nn.Conv1d(width, width, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(self.b(F.avg_pool1d(torch.tanh(self.a(x)), 2, ceil_mode=True)))


class SmoothActivations(nn.Module):
    """The activations of newer nets (MONAI's PReLU, transformers' GELU, SiLU, Mish, Softplus) around
    a pooled level with a residual add; none fusable for training's output derivative."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv3d(1, width, 3, padding=1), nn.BatchNorm3d(width), nn.PReLU(width))
        self.b = nn.Sequential(nn.Conv3d(width, width, (1, 3, 3), padding=(0, 1, 1)), nn.GELU())
        self.c = nn.Sequential(nn.Conv3d(width, width, 3, padding=1), nn.SiLU())
        self.up = nn.ConvTranspose3d(width, width, 2, stride=2)
        self.d = nn.Sequential(nn.Conv3d(width, width, 3, padding=1), nn.Mish(), nn.PReLU())
        self.head = nn.Conv3d(width, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.b(self.a(x))
        x = self.up(self.c(F.max_pool3d(x, 2))) + F.softplus(x)
        return F.gelu(self.head(self.d(x)), approximate="tanh")


@dataclass(frozen=True)
class Case:
    """A net and an input shape (C, *spatial) it accepts."""

    name: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]

    def __str__(self) -> str:
        return self.name


def cases() -> list[Case]:
    out = []
    for seed in (0, 1):
        rng = random.Random(seed)
        width = rng.choice([2, 3, 4])
        odd = rng.choice([1, 3])
        out += [
            Case(f"valid_unet_{seed}", lambda w=width, s=seed: randomize(ValidUNet(w), s), (1, 44 + 2 * odd, 44, 46)),
            Case(f"symmetric_unet_{seed}", lambda w=width, s=seed: randomize(SymmetricUNet(w), s), (1, 16, 24, 32)),
            Case(f"residual_{seed}", lambda w=width, s=seed: randomize(ResidualNet(w + 1), s),
                 (1, 5, 24 + 2 * odd, 30)),
            Case(f"kitchen_sink_{seed}", lambda w=width, s=seed: randomize(KitchenSink(2 * w), s),
                 (2, 9, 15 + odd, 13)),
            Case(f"net2d_{seed}", lambda w=width, s=seed: randomize(Net2d(w), s), (3, 20 + 2 * odd, 18)),
            Case(f"net1d_{seed}", lambda w=width, s=seed: randomize(Net1d(w), s), (2, 33 + odd)),
            Case(f"smooth_{seed}", lambda w=width, s=seed: randomize(SmoothActivations(w + 2), s),
                 (1, 8, 10 + 2 * odd, 12)),
        ]
    return out


def rel_error(actual: object, expected: object) -> float:
    """max |actual - expected| / max |expected|."""
    import numpy as np

    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"shapes differ: {a.shape} vs {e.shape}"
    return float(np.abs(a - e).max() / max(np.abs(e).max(), 1e-30))
