"""The architecture of the small U-Net bundled for `znnx demo` (one boundary channel), written as
an ONNX file with random weights (fixed seed). scripts/train_demo.sh trains it with `znnx train`
and installs the trained net as src/znnx/data/demo_unet.onnx.

Usage: python scripts/make_demo_model.py OUT.onnx
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn


class DemoUNet(nn.Module):
    """Two-level same-padded U-Net: conv-BN-ELU blocks, max pool, transposed conv, additive skip."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv3d(c_in, c_out, 3, padding=1), nn.BatchNorm3d(c_out), nn.ELU(),
                                 nn.Conv3d(c_out, c_out, 3, padding=1), nn.BatchNorm3d(c_out), nn.ELU())

        self.down = block(1, width)
        self.pool = nn.MaxPool3d(2)
        self.bottom = block(width, 2 * width)
        self.up = nn.ConvTranspose3d(2 * width, width, 2, stride=2)
        self.out_block = block(width, width)
        self.head = nn.Conv3d(width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.down(x)
        joined = self.up(self.bottom(self.pool(skip))) + skip
        return self.head(self.out_block(joined)).sigmoid()


def main() -> None:
    target = Path(sys.argv[1])
    torch.manual_seed(2026)
    model = DemoUNet().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm3d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    torch.onnx.export(model, (torch.zeros(1, 1, 32, 32, 32),), str(target), dynamo=False, opset_version=17,
                      input_names=["raw"], output_names=["boundary"],
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    print(f"wrote {target} ({target.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
