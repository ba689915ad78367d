"""A small trainable net for the training tests, importable as `path/to/factory.py:build`."""

from __future__ import annotations

from torch import nn


def build() -> nn.Module:
    """Valid convs with BatchNorm, a pool and a transposed conv, one sigmoid boundary channel."""
    return nn.Sequential(
        nn.Conv3d(1, 6, 3), nn.BatchNorm3d(6), nn.ReLU(), nn.Conv3d(6, 6, 3), nn.ReLU(), nn.MaxPool3d(2),
        nn.ConvTranspose3d(6, 6, 2, stride=2), nn.ELU(), nn.Conv3d(6, 1, 1), nn.Sigmoid(),
    ).eval()
