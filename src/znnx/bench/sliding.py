"""Sliding-window nets for the dense benchmark: ZNNi's four (SC16, Table V) and ZNN's N4, as PyTorch modules.

A `SlidingNet` is a stack of valid convolutions and max pools. As a patch classifier (`dense` off)
its pools stride; in dense mode (`dense` on) its forward is the straightforward way to get the
output at every voxel in PyTorch: every pool at stride 1 and every op after a pool dilated by the
strides before it. The PyTorch peers run the dense forward; znnx compiles the classifier with
`dense=True` (passes/dense.py), which chooses between the same dilated form and max-pooling
fragments.

ZNNi's nets: conv k^3 and max pool 2^3, 80 feature maps in every layer but the last (3), ReLU after
every conv. N4 (`../shared/models/N4.znn`): four (1,k,k) convs with ReLU each followed by a (1,2,2)
max filter, a (1,3,3) conv to 200 maps with ReLU, a linear 1x1x1 conv to 2.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

Triple = tuple[int, int, int]
Layer = tuple[str, Triple, int]  # ("conv", kernel, maps) or ("pool", window, 0)


def znni_layers(spec: str, width: int = 80, outputs: int = 3) -> list[Layer]:
    """ZNNi's notation, e.g. "C2 P C3 P C3": Ck a k^3 conv, P a 2^3 max pool."""
    tokens = spec.split()
    convs = sum(t.startswith("C") for t in tokens)
    layers: list[Layer] = []
    for token in tokens:
        if token == "P":
            layers.append(("pool", (2, 2, 2), 0))
        else:
            k = int(token[1:])
            last = sum(kind == "conv" for kind, _, _ in layers) == convs - 1
            layers.append(("conv", (k, k, k), outputs if last else width))
    return layers


def n4_layers(width: int = 48) -> list[Layer]:
    pool = ("pool", (1, 2, 2), 0)
    return [("conv", (1, 4, 4), width), pool, ("conv", (1, 5, 5), width), pool, ("conv", (1, 4, 4), width), pool,
            ("conv", (1, 4, 4), width), pool, ("conv", (1, 3, 3), 200 if width == 48 else width),
            ("conv", (1, 1, 1), 2)]


ZNNI = {"n337": "C2 P C3 P C3 P C3 C3 C3 C3", "n537": "C4 P C5 P C5 P C5 C5 C5 C5",
        "n726": "C6 P C7 P C7 C7 C7 C7", "n926": "C8 P C9 P C9 C9 C9 C9"}
ZNNI_FIELD_OF_VIEW = {"n337": 85, "n537": 163, "n726": 117, "n926": 155}
ZNNI_CPU = {"n337": 262_131, "n537": 194_683, "n726": 300_312, "n926": 249_190}
"""ZNNi (SC16, Table V): output voxels/s, CPU only, 72-core 4-socket Xeon E7-8890 v3."""
ZNNI_CORES = 72
ZNNI_GPU = {"n337": 671_782, "n537": 29_352, "n726": 97_257, "n926": 35_051}
ZNNI_CPU_GPU = {"n337": 1_059_910, "n537": 334_163, "n726": 470_166, "n926": 375_295}


class SlidingNet(nn.Module):
    """Valid convs (ReLU after each, the last too unless `relu_last` is off) and max pools."""

    def __init__(self, layers: Sequence[Layer], relu_last: bool = True, dense: bool = False) -> None:
        super().__init__()
        self.layers = list(layers)
        self.relu_last = relu_last
        self.dense = dense
        maps, convs = 1, []
        for kind, kernel, out in self.layers:
            if kind == "conv":
                convs.append(nn.Conv3d(maps, out, kernel))
                maps = out
        self.convs = nn.ModuleList(convs)

    def conv_list(self) -> list[nn.Conv3d]:
        return [cast(nn.Conv3d, conv) for conv in self.convs]

    def classifier(self) -> SlidingNet:
        """The same net (shared weights) as a patch classifier: pools stride."""
        other = copy.copy(self)
        other.dense = False
        return other

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dilation = [1, 1, 1]
        convs = iter(self.conv_list())
        last = len(self.convs) - 1
        for kind, kernel, _ in self.layers:
            if kind == "pool":
                if self.dense:
                    x = F.max_pool3d(x, kernel, 1, dilation=dilation)
                    dilation = [d * k for d, k in zip(dilation, kernel)]
                else:
                    x = F.max_pool3d(x, kernel)
                continue
            conv = next(convs)
            x = F.conv3d(x, conv.weight, conv.bias, dilation=dilation if self.dense else 1)
            if conv is not self.conv_list()[last] or self.relu_last:
                x = F.relu(x)
        return x


def znni_net(name: str, tiny: bool = False, dense: bool = True, seed: int = 0) -> SlidingNet:
    """ZNNi's net `name` with seeded random weights (He-uniform so activations keep their scale)."""
    torch.manual_seed(seed)
    net = SlidingNet(znni_layers(ZNNI[name], 8 if tiny else 80), dense=dense)
    return _scaled(net)


def n4_net(tiny: bool = False, dense: bool = True, seed: int = 0) -> SlidingNet:
    torch.manual_seed(seed)
    return _scaled(SlidingNet(n4_layers(8 if tiny else 48), relu_last=False, dense=dense))


def _scaled(net: SlidingNet) -> SlidingNet:
    with torch.no_grad():
        for conv in net.conv_list():
            nn.init.kaiming_uniform_(conv.weight, nonlinearity="relu")
            nn.init.uniform_(cast(torch.Tensor, conv.bias), -0.01, 0.01)
    return net.eval()
