"""The benchmark networks of design/BENCHMARK_MODELS.md as PyTorch modules.

Every conv is followed by BatchNorm (affine) and ELU unless stated; 1 input channel, 3 output
channels through a 1x1x1 conv and sigmoid. Weights are random; BatchNorm statistics are random
too (timing does not depend on trained values, and identity statistics would hide BN's cost).
The fourth net, pznet, is the PZnet authors' Caffe prototxt, run by peers through a PyTorch
module that executes the imported graph. pznet_unet.prototxt beside this file is a copy of the
project's shared/models/pznet_unet.prototxt (public repository seung-lab/pznet, tests/unet.prototxt,
commit ef8dcdc); no weights are published, so it runs with random ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import znnx
from znnx.bench import user_nets
from znnx.bench.user_nets import encode

PZNET_PROTOTXT = Path(__file__).resolve().parent / "pznet_unet.prototxt"


def conv_bn_elu(c_in: int, c_out: int, kernel: int | tuple[int, int, int], padding: int | tuple[int, int, int]
                ) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(c_in, c_out, kernel, padding=padding), nn.BatchNorm3d(c_out), nn.ELU())


class OriginalUNet(nn.Module):
    """3D U-Net (Cicek et al. 2016): two valid 3x3x3 convs per block, max pool 2, transposed conv
    2x2x2 stride 2 halving channels, centre crop of the skip (MergeCrop) and concat."""

    def __init__(self, widths: Sequence[int] = (64, 128, 256, 512)) -> None:
        super().__init__()
        ins = [1, *widths[:-1]]
        self.down = nn.ModuleList(nn.Sequential(conv_bn_elu(i, w, 3, 0), conv_bn_elu(w, w, 3, 0))
                                  for i, w in zip(ins, widths))
        self.up = nn.ModuleList(nn.ConvTranspose3d(w, w // 2, 2, stride=2) for w in reversed(widths[1:]))
        self.up_blocks = nn.ModuleList(nn.Sequential(conv_bn_elu(w, w // 2, 3, 0), conv_bn_elu(w // 2, w // 2, 3, 0))
                                       for w in reversed(widths[1:]))
        self.head = nn.Conv3d(widths[0], 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, skips = encode(self.down, x)
        for up, block, skip in zip(self.up, self.up_blocks, reversed(skips)):
            x = up(x)
            d, h, w = ((s - t) // 2 for s, t in zip(skip.shape[2:], x.shape[2:]))
            x = block(torch.cat([skip[:, :, d:d + x.shape[2], h:h + x.shape[3], w:w + x.shape[4]], x], dim=1))
        return torch.sigmoid(self.head(x))


class SymmetricUNet(nn.Module):
    """Two same-padded 3x3x3 convs per block, max pool 2, transposed conv halving channels, add joins."""

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 256)) -> None:
        super().__init__()
        ins = [1, *widths[:-1]]
        self.down = nn.ModuleList(nn.Sequential(conv_bn_elu(i, w, 3, 1), conv_bn_elu(w, w, 3, 1))
                                  for i, w in zip(ins, widths))
        self.up = nn.ModuleList(nn.ConvTranspose3d(w, w // 2, 2, stride=2) for w in reversed(widths[1:]))
        self.up_blocks = nn.ModuleList(
            nn.Sequential(conv_bn_elu(w // 2, w // 2, 3, 1), conv_bn_elu(w // 2, w // 2, 3, 1))
            for w in reversed(widths[1:]))
        self.head = nn.Conv3d(widths[0], 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, skips = encode(self.down, x)
        for up, block, skip in zip(self.up, self.up_blocks, reversed(skips)):
            x = block(up(x) + skip)
        return torch.sigmoid(self.head(x))


class ResidualBlock(nn.Module):
    """conv (1,3,3) -> [conv 3x3x3 -> BN -> ELU -> conv 3x3x3 -> BN, + input, ELU] -> conv (1,3,3)."""

    def __init__(self, c_in: int, c: int) -> None:
        super().__init__()
        self.pre = conv_bn_elu(c_in, c, (1, 3, 3), (0, 1, 1))
        self.res = nn.Sequential(conv_bn_elu(c, c, 3, 1), nn.Conv3d(c, c, 3, padding=1), nn.BatchNorm3d(c))
        self.post = conv_bn_elu(c, c, (1, 3, 3), (0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre(x)
        return self.post(F.elu(self.res(x) + x))


class ResidualUNet(nn.Module):
    """Residual symmetric U-Net after Lee et al. 2017: anisotropic (1,2,2) pooling and upsampling."""

    def __init__(self, widths: Sequence[int] = (28, 36, 48, 64, 80)) -> None:
        super().__init__()
        self.embed = conv_bn_elu(1, widths[0], (1, 5, 5), (0, 2, 2))
        self.down = nn.ModuleList(ResidualBlock(i, w) for i, w in zip([widths[0], *widths[:-1]], widths))
        self.up = nn.ModuleList(nn.ConvTranspose3d(w, lower, (1, 2, 2), stride=(1, 2, 2))
                                for w, lower in zip(reversed(widths[1:]), reversed(widths[:-1])))
        self.up_blocks = nn.ModuleList(ResidualBlock(w, w) for w in reversed(widths[:-1]))
        self.out = conv_bn_elu(widths[0], widths[0], (1, 5, 5), (0, 2, 2))
        self.head = nn.Conv3d(widths[0], 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, skips = encode(self.down, self.embed(x), (1, 2, 2))
        for up, block, skip in zip(self.up, self.up_blocks, reversed(skips)):
            x = block(up(x) + skip)
        return torch.sigmoid(self.head(self.out(x)))


class GraphModule(nn.Module):
    """A PyTorch module that runs a znnx graph with PyTorch ops, so peers can run imported nets."""

    def __init__(self, graph: object) -> None:
        super().__init__()
        from znnx.backends import torch_eager

        assert isinstance(graph, znnx.Graph)
        self.graph: znnx.Graph = graph
        self.run = torch_eager.build(graph, torch.device("cpu"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run([x])[0]


def load_graph(model: nn.Module, x: np.ndarray) -> znnx.Graph:
    """The znnx graph of a benchmark model for input `x` (N, C, *spatial): imported, or the graph a
    GraphModule already runs."""
    if isinstance(model, GraphModule):
        return model.graph
    return znnx.load(model, input_shape=x.shape[1:])


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights (PyTorch's default init, seeded), random BatchNorm statistics and PReLU slopes;
    eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv3d | nn.ConvTranspose3d):
                fan_in = module.weight[0].numel() if isinstance(module, nn.Conv3d) else module.weight.shape[0]
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) / fan_in**0.5)
                bias = module.bias
                if bias is not None:
                    bias.copy_(torch.randn(bias.shape, generator=generator) * 0.1)
            if isinstance(module, nn.PReLU):
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) * 0.4 + 0.05)
            if isinstance(module, nn.BatchNorm3d):
                c = module.num_features
                stats = (module.running_mean, module.running_var, module.weight, module.bias)
                values = (torch.rand(c, generator=generator) * 0.4 - 0.2, torch.rand(c, generator=generator) + 0.5,
                          torch.rand(c, generator=generator) + 0.5, torch.rand(c, generator=generator) * 0.2 - 0.1)
                for target, value in zip(stats, values):
                    assert target is not None, "BatchNorm3d is built with affine=True and running stats"
                    target.copy_(value)
    return model.eval()


@dataclass(frozen=True)
class BenchNet:
    """A benchmark net: how to build it, its standard patch, sizes for the patch sweep, a tiny
    variant (narrow widths, small patches) for smoke tests, and its input channels."""

    name: str
    build: Callable[[bool, tuple[int, ...]], nn.Module]
    patch: tuple[int, int, int]
    sweep: tuple[tuple[int, int, int], ...]
    tiny_patch: tuple[int, int, int]
    tiny_sweep: tuple[tuple[int, int, int], ...]
    channels: int = 1


def _pznet(tiny: bool, patch: tuple[int, ...]) -> nn.Module:
    """The imported Caffe graph shaped for `patch` (a GraphModule runs one static shape)."""
    import znnx

    return GraphModule(znnx.compile(znnx.load(PZNET_PROTOTXT, weights="random"), patch=patch).graph).eval()


def _cubes(*sizes: int) -> tuple[tuple[int, int, int], ...]:
    return tuple((s, s, s) for s in sizes)


NETS: dict[str, BenchNet] = {
    "original": BenchNet(
        "original", lambda tiny, patch: randomize(OriginalUNet((4, 8, 16, 32) if tiny else (64, 128, 256, 512))),
        (116, 132, 132), _cubes(100, 116, 132, 148), (108, 108, 108), _cubes(100, 108)),
    "symmetric": BenchNet(
        "symmetric", lambda tiny, patch: randomize(SymmetricUNet((4, 8, 16, 32) if tiny else (32, 64, 128, 256))),
        (64, 128, 128), _cubes(48, 64, 96, 128), (16, 32, 32), _cubes(16, 24)),
    "residual": BenchNet(
        "residual", lambda tiny, patch: randomize(ResidualUNet((4, 6, 8, 10, 12) if tiny else (28, 36, 48, 64, 80))),
        (20, 256, 256), ((20, 128, 128), (20, 192, 192), (20, 256, 256), (20, 320, 320)), (4, 32, 32),
        ((4, 32, 32), (4, 48, 48))),
    "pznet": BenchNet("pznet", _pznet, (18, 192, 192), ((18, 128, 128), (18, 192, 192), (18, 256, 256)),
                      (2, 32, 32), ((2, 32, 32), (2, 64, 64))),
}
"""The U-Net benchmark nets (design/BENCHMARK_MODELS.md)."""


def _sliding(name: str) -> Callable[[bool, tuple[int, ...]], nn.Module]:
    from znnx.bench.sliding import n4_net, znni_net

    return lambda tiny, patch: n4_net(tiny) if name == "n4" else znni_net(name, tiny)


DENSE_NETS: dict[str, BenchNet] = {
    "n337": BenchNet("n337", _sliding("n337"), _cubes(212)[0], _cubes(148, 180, 212), _cubes(100)[0], _cubes(92, 100)),
    "n537": BenchNet("n537", _sliding("n537"), _cubes(234)[0], _cubes(202, 218, 234), _cubes(178)[0],
                     _cubes(170, 178)),
    "n726": BenchNet("n726", _sliding("n726"), _cubes(196)[0], _cubes(164, 180, 196), _cubes(124)[0],
                     _cubes(120, 124)),
    "n926": BenchNet("n926", _sliding("n926"), _cubes(222)[0], _cubes(190, 206, 222), _cubes(162)[0],
                     _cubes(158, 162)),
    "n4": BenchNet("n4", _sliding("n4"), (1, 606, 606), ((1, 350, 350), (1, 478, 478), (1, 606, 606)),
                   (1, 110, 110), ((1, 110, 110), (1, 126, 126))),
}
"""Sliding-window nets run densely (bench/sliding.py): ZNNi's four and ZNN's N4; patches the
max-pooling fragments divide."""
NETS.update(DENSE_NETS)


def _user(net: Callable[[], nn.Module]) -> Callable[[bool, tuple[int, ...]], nn.Module]:
    """A user-style net (bench/user_nets.py): already narrow, so the tiny variant differs in patch only."""
    return lambda tiny, patch: randomize(net())


USER_NETS: dict[str, BenchNet] = {
    "lsd": BenchNet("lsd", _user(user_nets.LsdUNet), (32, 232, 232), ((32, 178, 178), (32, 232, 232)),
                    (16, 88, 88), ((16, 88, 88), (20, 88, 88))),
    "ffn": BenchNet("ffn", _user(user_nets.FloodFillingNet), (32, 64, 64), ((24, 48, 48), (32, 64, 64)),
                    (8, 24, 24), ((8, 24, 24), (8, 32, 32)), channels=2),
    "nnunet": BenchNet("nnunet", _user(user_nets.NnUNet), (96, 96, 96), _cubes(64, 96, 128),
                       (16, 16, 16), _cubes(16, 24), channels=4),
    "aniso": BenchNet("aniso", _user(user_nets.AnisoResidualUNet), (16, 192, 192), ((16, 128, 128), (16, 192, 192)),
                      (4, 32, 32), ((4, 32, 32), (4, 48, 48))),
    "plantseg": BenchNet("plantseg", _user(user_nets.PlantSegUNet), (64, 128, 128), ((48, 96, 96), (64, 128, 128)),
                         (16, 32, 32), ((16, 32, 32), (16, 48, 48)), channels=2),
    "tiny": BenchNet("tiny", _user(user_nets.TinyValidUNet), (108, 108, 108), _cubes(92, 108, 124),
                     (44, 44, 44), _cubes(44, 60)),
    "monai": BenchNet("monai", _user(user_nets.MonaiUNet), (96, 96, 96), _cubes(64, 96, 128), (32, 32, 32),
                      _cubes(32, 48)),
}
"""Nets shaped like users' (bench/user_nets.py): narrow, varied in padding, pooling, upsampling, skips,
kernels and input channels."""
NETS.update(USER_NETS)
