"""Nets shaped like the ones users bring, beside the U-Net benchmark nets: narrow (8-48 channels),
valid and same padding, max and average pooling and strided convs, nearest and trilinear
upsampling and transposed convs, concat and add skips, anisotropic kernels, 1-4 input channels.

Each follows a published family at a size a lab would train on one GPU:
- lsd: the funlib / local-shape-descriptor affinity U-Net: valid convs, (1,3,3) kernels on the
  anisotropic top level, max pools (1,3,3), nearest upsampling then a 1x1x1 conv, crop + concat.
- ffn: the flood-filling network: image and object mask in, 32 channels, same 3x3x3 convs in
  residual modules (ReLU, conv, ReLU, conv, + input), no pooling.
- nnunet: an nnU-Net-style MRI net: four modalities in, strided convs down, transposed convs up,
  concat skips, BatchNorm + LeakyReLU, four-class softmax.
- aniso: an anisotropic residual U-Net for EM: average pools (1,2,2), trilinear upsampling, add
  skips, (1,3,3) and 3x3x3 kernels, BatchNorm + ELU.
- plantseg: a PlantSeg-style light-sheet U-Net: two channels in (membrane, nuclei), max pool 2,
  nearest upsampling, concat skips, BatchNorm + ReLU, one sigmoid output.
- tiny: a minimal valid-conv U-Net: 8-16-32 channels, average pool 2, transposed conv, crop +
  concat, ELU.
- monai: MONAI's `UNet` as its tutorials build it (channels 16-256, strides 2, two residual units,
  BatchNorm): strided 3x3x3 convs down, residual units with a strided conv on the skip, PReLU,
  3x3x3 stride-2 transposed convs up (output padding 1), concat skips, the last straight to 2 classes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

Triple = tuple[int, int, int]


def conv(c_in: int, c_out: int, kernel: int | Triple, padding: int | Triple, act: nn.Module,
         norm: bool = True, stride: int | Triple = 1) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv3d(c_in, c_out, kernel, stride=stride, padding=padding)]
    return nn.Sequential(*layers, *([nn.BatchNorm3d(c_out)] if norm else []), act)


def encode(blocks: nn.ModuleList, x: torch.Tensor, window: int | Triple = (2, 2, 2),
           pool: Callable[..., torch.Tensor] = F.max_pool3d) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The contracting path: every block but the last keeps a skip and is pooled (`pool` over `window`,
    max by default). The benchmark U-Nets (bench/models.py) use it too."""
    skips = []
    for i, block in enumerate(blocks):
        x = block(x)
        if i < len(blocks) - 1:
            skips.append(x)
            x = pool(x, window)
    return x, skips


def crop_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The centre of `x` with the spatial shape of `like`."""
    d, h, w = ((s - t) // 2 for s, t in zip(x.shape[2:], like.shape[2:]))
    return x[:, :, d:d + like.shape[2], h:h + like.shape[3], w:w + like.shape[4]]


class LsdUNet(nn.Module):
    def __init__(self, widths: Sequence[int] = (12, 24, 48)) -> None:
        super().__init__()
        kernels: list[Triple] = [(1, 3, 3), (3, 3, 3), (3, 3, 3)]
        ins = [1, *widths[:-1]]
        self.down = nn.ModuleList(
            nn.Sequential(conv(i, w, k, 0, nn.ReLU(), norm=False), conv(w, w, k, 0, nn.ReLU(), norm=False))
            for i, w, k in zip(ins, widths, kernels))
        self.up = nn.ModuleList(nn.Conv3d(w, lower, 1) for w, lower in zip(reversed(widths[1:]), reversed(widths[:-1])))
        self.up_blocks = nn.ModuleList(
            nn.Sequential(conv(2 * w, w, k, 0, nn.ReLU(), norm=False), conv(w, w, k, 0, nn.ReLU(), norm=False))
            for w, k in zip(reversed(widths[:-1]), reversed(kernels[:-1])))
        self.head = nn.Conv3d(widths[0], 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, skips = encode(self.down, x, (1, 3, 3))
        for up, block, skip in zip(self.up, self.up_blocks, reversed(skips)):
            x = up(F.interpolate(x, scale_factor=(1, 3, 3), mode="nearest"))
            x = block(torch.cat([crop_to(skip, x), x], dim=1))
        return torch.sigmoid(self.head(x))


class FloodFillingNet(nn.Module):
    def __init__(self, width: int = 32, modules: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(2, width, 3, padding=1), nn.ReLU(), nn.Conv3d(width, width, 3, padding=1))
        self.res = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Conv3d(width, width, 3, padding=1), nn.ReLU(),
                          nn.Conv3d(width, width, 3, padding=1)) for _ in range(modules))
        self.head = nn.Conv3d(width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for module in self.res:
            x = x + module(x)
        return self.head(F.relu(x))


class NnUNet(nn.Module):
    def __init__(self, widths: Sequence[int] = (16, 32, 48, 48)) -> None:
        super().__init__()
        ins = [4, *widths[:-1]]
        self.down = nn.ModuleList(
            nn.Sequential(conv(i, w, 3, 1, nn.LeakyReLU(0.01), stride=1 if level == 0 else 2),
                          conv(w, w, 3, 1, nn.LeakyReLU(0.01)))
            for level, (i, w) in enumerate(zip(ins, widths)))
        self.up = nn.ModuleList(nn.ConvTranspose3d(w, lower, 2, stride=2)
                                for w, lower in zip(reversed(widths[1:]), reversed(widths[:-1])))
        self.up_blocks = nn.ModuleList(nn.Sequential(conv(2 * w, w, 3, 1, nn.LeakyReLU(0.01)),
                                                     conv(w, w, 3, 1, nn.LeakyReLU(0.01)))
                                       for w in reversed(widths[:-1]))
        self.head = nn.Conv3d(widths[0], 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        for up, block, skip in zip(self.up, self.up_blocks, reversed(skips[:-1])):
            x = block(torch.cat([skip, up(x)], dim=1))
        return torch.softmax(self.head(x), dim=1)


class AnisoLevel(nn.Module):
    """conv (1,3,3) -> [conv 3x3x3 -> BN -> ELU -> conv 3x3x3 -> BN, + its input, ELU]."""

    def __init__(self, c_in: int, c: int) -> None:
        super().__init__()
        self.pre = conv(c_in, c, (1, 3, 3), (0, 1, 1), nn.ELU())
        self.res = nn.Sequential(conv(c, c, 3, 1, nn.ELU()), nn.Conv3d(c, c, 3, padding=1), nn.BatchNorm3d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre(x)
        return F.elu(self.res(x) + x)


class AnisoResidualUNet(nn.Module):
    def __init__(self, widths: Sequence[int] = (16, 24, 32, 40)) -> None:
        super().__init__()
        self.embed = conv(1, 16, (1, 5, 5), (0, 2, 2), nn.ELU())
        self.down = nn.ModuleList(AnisoLevel(i, w) for i, w in zip([16, *widths[:-1]], widths))
        self.reduce = nn.ModuleList(nn.Conv3d(w, lower, 1) for w, lower in zip(reversed(widths[1:]),
                                                                                reversed(widths[:-1])))
        self.up_blocks = nn.ModuleList(
            nn.Sequential(conv(w, w, 3, 1, nn.ELU()), conv(w, w, (1, 3, 3), (0, 1, 1), nn.ELU()))
            for w in reversed(widths[:-1]))
        self.head = nn.Conv3d(widths[0], 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, skips = encode(self.down, self.embed(x), (1, 2, 2), F.avg_pool3d)
        for reduce, block, skip in zip(self.reduce, self.up_blocks, reversed(skips)):
            x = block(reduce(F.interpolate(x, scale_factor=(1, 2, 2), mode="trilinear")) + skip)
        return torch.sigmoid(self.head(x))


class PlantSegUNet(nn.Module):
    def __init__(self, widths: Sequence[int] = (8, 16, 32, 48)) -> None:
        super().__init__()
        ins = [2, *widths[:-1]]
        self.down = nn.ModuleList(nn.Sequential(conv(i, w, 3, 1, nn.ReLU()), conv(w, w, 3, 1, nn.ReLU()))
                                  for i, w in zip(ins, widths))
        self.up_blocks = nn.ModuleList(
            nn.Sequential(conv(w + upper, w, 3, 1, nn.ReLU()), conv(w, w, 3, 1, nn.ReLU()))
            for w, upper in zip(reversed(widths[:-1]), reversed(widths[1:])))
        self.head = nn.Conv3d(widths[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, skips = encode(self.down, x)
        for block, skip in zip(self.up_blocks, reversed(skips)):
            x = block(torch.cat([skip, F.interpolate(x, scale_factor=2, mode="nearest")], dim=1))
        return torch.sigmoid(self.head(x))


class TinyValidUNet(nn.Module):
    def __init__(self, widths: Sequence[int] = (8, 16, 32)) -> None:
        super().__init__()
        ins = [1, *widths[:-1]]
        self.down = nn.ModuleList(nn.Sequential(conv(i, w, 3, 0, nn.ELU(), norm=False),
                                                conv(w, w, 3, 0, nn.ELU(), norm=False)) for i, w in zip(ins, widths))
        self.up = nn.ModuleList(nn.ConvTranspose3d(w, lower, 2, stride=2)
                                for w, lower in zip(reversed(widths[1:]), reversed(widths[:-1])))
        self.up_blocks = nn.ModuleList(nn.Sequential(conv(2 * w, w, 3, 0, nn.ELU(), norm=False),
                                                     conv(w, w, 3, 0, nn.ELU(), norm=False))
                                       for w in reversed(widths[:-1]))
        self.head = nn.Conv3d(widths[0], 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, skips = encode(self.down, x, 2, F.avg_pool3d)
        for up, block, skip in zip(self.up, self.up_blocks, reversed(skips)):
            x = up(x)
            x = block(torch.cat([crop_to(skip, x), x], dim=1))
        return torch.softmax(self.head(x), dim=1)


def _monai_unit(c_in: int, c_out: int, stride: int, conv_only: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv3d(c_in, c_out, 3, stride=stride, padding=1)]
    return nn.Sequential(*layers, *([] if conv_only else [nn.BatchNorm3d(c_out), nn.PReLU()]))


class MonaiResidualUnit(nn.Module):
    """MONAI's ResidualUnit: `subunits` conv-BN-PReLU units (the first strided, the last conv only
    where `last_conv_only`) plus the input through a 3x3x3 strided conv, a 1x1x1 conv where only the
    channels change, or as it is."""

    def __init__(self, c_in: int, c_out: int, stride: int, subunits: int, last_conv_only: bool = False) -> None:
        super().__init__()
        self.units = nn.Sequential(*(_monai_unit(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1,
                                                 last_conv_only and i == subunits - 1) for i in range(subunits)))
        self.residual: nn.Module = (nn.Conv3d(c_in, c_out, 3, stride=stride, padding=1) if stride != 1 else
                                    nn.Conv3d(c_in, c_out, 1) if c_in != c_out else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.units(x) + self.residual(x)


class MonaiUNet(nn.Module):
    def __init__(self, channels: Sequence[int] = (16, 32, 64, 128, 256), c_in: int = 1, c_out: int = 2) -> None:
        super().__init__()
        self.down = nn.ModuleList(MonaiResidualUnit(i, o, 2, 2) for i, o in zip([c_in, *channels[:-2]], channels[:-1]))
        self.bottom = MonaiResidualUnit(channels[-2], channels[-1], 1, 2)
        outs = [c_out, *channels[:-2]]
        self.up = nn.ModuleList()
        for level in reversed(range(len(channels) - 1)):
            below = channels[level + 1] if level == len(channels) - 2 else channels[level]
            c = outs[level]
            self.up.append(nn.Sequential(
                nn.ConvTranspose3d(channels[level] + below, c, 3, stride=2, padding=1, output_padding=1),
                nn.BatchNorm3d(c), nn.PReLU(), MonaiResidualUnit(c, c, 1, 1, last_conv_only=level == 0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = self.bottom(x)
        for block, skip in zip(self.up, reversed(skips)):
            x = block(torch.cat([skip, x], dim=1))
        return x
