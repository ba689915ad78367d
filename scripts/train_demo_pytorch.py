"""The demo training recipe (scripts/train_demo.sh) in plain PyTorch, for comparison: the same
DemoUNet, data (znnx synth, seed 0), samples (znnx's sampler: same patches and augmentation per
step), rebalanced binary cross-entropy, Adam with a cosine schedule, MSRA init, 2 threads; PyTorch
autograd and oneDNN throughout. Prints the held-out boundary F1 every 500 steps and the seconds.

Usage: python scripts/train_demo_pytorch.py WORK_DIR   (WORK_DIR holds data.zarr from train_demo.sh)
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from make_demo_model import DemoUNet
from znnx.training.data import Augment, Sampler, Window, batches
from znnx.training.run import read_volumes
from znnx.training.validate import predict, score

STEPS, PATCH, LR = 3000, (32, 32, 32), 2e-3


def main() -> None:
    work = Path(sys.argv[1])
    torch.set_num_threads(2)
    torch.manual_seed(0)
    volumes, _ = read_volumes(str(work / "data.zarr/raw"), str(work / "data.zarr/labels"))
    depth = volumes.image.shape[1]
    held = max(math.ceil(depth * 0.34), PATCH[0])
    train_part, val_part = volumes.region(slice(0, depth - held)), volumes.region(slice(depth - held, depth))
    window = Window(PATCH, PATCH, (0, 0, 0))
    sampler = Sampler(train_part, window, "boundary", True, Augment(), seed=0)
    model = DemoUNet()
    for module in model.modules():
        if isinstance(module, nn.Conv3d | nn.ConvTranspose3d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)
    model = model.train().to(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, STEPS) / STEPS)))
    start = time.perf_counter()
    for step, samples in enumerate(batches(sampler, 0, STEPS, 1), 1):
        x = torch.from_numpy(np.stack([s.image for s in samples])).contiguous(memory_format=torch.channels_last_3d)
        t = torch.from_numpy(np.stack([s.target for s in samples]))
        w = torch.from_numpy(np.stack([s.weight for s in samples]))
        optimizer.zero_grad(set_to_none=True)
        y = model(x)
        loss = (torch.nn.functional.binary_cross_entropy(y, t, reduction="none") * w).sum() / w.sum()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 500 == 0:
            scores = score("boundary", predict(model, lambda y: y, val_part.image, window), val_part, window)
            print(f"step {step}  loss {float(loss):.4f}  {dict(scores.values)}  {time.perf_counter() - start:.0f} s",
                  flush=True)


if __name__ == "__main__":
    main()
