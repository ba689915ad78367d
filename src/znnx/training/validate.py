"""Validation on a held-out region: the net in eval mode over the region patch by patch, then
boundary F1 and pixel error (boundary nets) or the adapted Rand error of the thresholded affinities'
connected components (affinity nets) against the ground truth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from znnx.segment.metrics import adapted_rand_error
from znnx.training.data import Volumes, Window, boundary, output_box, tiles

THRESHOLD = 0.5


@dataclass(frozen=True)
class Scores:
    """`metric` (the one reported and plotted: F1 for boundaries, higher is better; adapted Rand
    error for affinities, lower is better) and every score measured, by name."""

    metric: str
    values: tuple[tuple[str, float], ...]

    @property
    def value(self) -> float:
        return dict(self.values)[self.metric]


def predict(net: torch.nn.Module, probability: object, image: np.ndarray, window: Window) -> np.ndarray:
    """The net's probabilities over the valid output of `image` (C, D, H, W), tiled by `window`;
    `probability` maps the net's output to probabilities (sigmoid / softmax / identity)."""
    spatial = image.shape[1:]
    box = output_box(spatial, window)
    result: np.ndarray | None = None
    was_training = net.training
    device = next(net.parameters()).device
    net.eval()
    with torch.no_grad():
        for corner in tiles(spatial, window):
            patch = image[(slice(None), *(slice(c, c + i) for c, i in zip(corner, window.input)))]
            x = torch.from_numpy(np.ascontiguousarray(patch))[None].to(device)
            out = probability(net(x).float())[0].cpu().numpy()  # type: ignore[operator]
            if result is None:
                result = np.zeros((out.shape[0], *(b.stop - b.start for b in box)), np.float32)
            result[(slice(None), *(slice(c, c + o) for c, o in zip(corner, window.output)))] = out
    net.train(was_training)
    assert result is not None
    return result


def components(aff: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """Connected components of the graph whose edges are the affinities above `threshold` (aff[c]
    joins a voxel to the one before it along axis c), labelled 1..n."""
    shape = aff.shape[1:]
    labels = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    edges = []
    for axis in range(3):
        later = tuple(slice(1, None) if a == axis else slice(None) for a in range(3))
        earlier = tuple(slice(None, -1) if a == axis else slice(None) for a in range(3))
        edges.append((later, earlier, aff[axis][later] > threshold))
    while True:
        previous = labels.copy()
        for here, before, joined in edges:
            low = np.minimum(labels[here], labels[before])
            labels[here] = np.where(joined, low, labels[here])
            labels[before] = np.where(joined, np.minimum(labels[before], low), labels[before])
        flat = labels.reshape(-1)
        while True:
            jumped = flat[flat]
            if np.array_equal(jumped, flat):
                break
            flat = jumped
        labels = flat.reshape(shape)
        if np.array_equal(labels, previous):
            break
    _, dense = np.unique(labels, return_inverse=True)
    return dense.reshape(shape) + 1


def score(kind: str, prediction: np.ndarray, volumes: Volumes, window: Window) -> Scores:
    """Scores of `prediction` (the output of `predict` on `volumes`) against its labels."""
    box = output_box(volumes.labels.shape, window)
    truth_labels = volumes.labels[box]
    valid = np.ones(truth_labels.shape, bool) if volumes.mask is None else volumes.mask[box].astype(bool)
    if kind == "boundary":
        truth = boundary(volumes.labels)[0][box] > 0.5
        guess = prediction[-1] > THRESHOLD
        hits = float((guess & truth & valid).sum())
        precision = hits / max(float((guess & valid).sum()), 1.0)
        recall = hits / max(float((truth & valid).sum()), 1.0)
        f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
        error = float(((guess != truth) & valid).sum()) / max(float(valid.sum()), 1.0)
        return Scores("boundary_f1", (("boundary_f1", f1), ("pixel_error", error)))
    segmentation = components(prediction) * valid
    return Scores("adapted_rand_error", (("adapted_rand_error",
                                          adapted_rand_error(segmentation, truth_labels * valid)),))
