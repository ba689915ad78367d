"""FLOPs, parameters and geometry on nets whose numbers are known by hand."""

from __future__ import annotations

from fractions import Fraction

import torch
from torch import nn

import znnx
from tests.nets import ValidUNet
from znnx.report import geometry, layers


def test_conv_flops_and_params() -> None:
    graph = znnx.load(nn.Conv3d(4, 8, (1, 3, 3)), input_shape=(4, 5, 10, 10))
    (layer,) = layers(graph)
    assert layer.params == 8 * 4 * 9 + 8
    assert layer.flops == 2 * 4 * 9 * 8 * 5 * 8 * 8


def test_valid_unet_geometry() -> None:
    geo = geometry(znnx.load(ValidUNet(2), input_shape=(1, 44, 44, 44)))
    # two 3-convs: 5; pool 2: 6, jump 2; two 3-convs at jump 2: 6 + 8 = 14; the 2x2x2 up-conv maps
    # each voxel to one bottom voxel (jump 1); two 3-convs then add 2 + 2: 18.
    assert geo.receptive_field == (18, 18, 18)
    assert geo.stride == (Fraction(1), Fraction(1), Fraction(1))
    assert geo.output_spatial == (28, 28, 28)


def test_anisotropic_pooling_stride() -> None:
    model = nn.Sequential(nn.Conv3d(1, 2, (1, 3, 3)), nn.MaxPool3d((1, 2, 2)), nn.Conv3d(2, 2, 3))
    geo = geometry(znnx.load(model, input_shape=(1, 5, 12, 12)))
    assert geo.stride == (1, 2, 2)
    assert geo.receptive_field == (3, 3 + 1 + 2 * 2, 3 + 1 + 2 * 2)
    assert torch.Size(geo.output_spatial) == torch.Size((3, 3, 3))
