"""Training data: volumes in memory, targets made from a segmentation, random patches with
augmentation, read ahead in background threads.

- Targets (ZNN's): `boundary` (1 where a voxel is background or touches a voxel of another label
  along an axis, 1 channel) and `affinity` (nearest-neighbour affinities along z, y, x: 1 between
  two voxels of one non-zero label, 3 channels; segment/synthetic.py's convention).
- Rebalancing (ZNN's `rebalance`): per patch and channel, each class weighs half the total, so
  rare boundaries count as much as cell interiors; an optional mask (non-zero: train here)
  multiplies the weights.
- Sample `i` depends only on (seed, i): read ahead by any number of threads, or after a resume, a
  step sees the same patch, so a run is reproducible and a resumed run follows the same trajectory.
- Augmentation, each drawn per sample: a flip of each axis whose input margins are symmetric (a
  flip about the output window must not move it), a y/x transposition where the patch is square in
  y/x (with the flips: the 90-degree rotations), intensity jitter (contrast and brightness),
  missing sections (a z slice set to the patch mean) and misalignment (the slices from a random z
  on shifted in y/x by up to `misalign` voxels, circularly).
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from znnx.errors import InputError
from znnx.segment.synthetic import affinities
from znnx.volume.block import window_starts

TARGETS = {"boundary": 1, "affinity": 3}


@dataclass(frozen=True)
class Augment:
    flips: bool = True
    transpose: bool = True
    jitter: float = 0.1
    missing: float = 0.0
    misalign: int = 0

    @classmethod
    def none(cls) -> Augment:
        return cls(False, False, 0.0, 0.0, 0)


@dataclass(frozen=True)
class Volumes:
    """`image` (C, D, H, W) float32, normalized; `labels` (D, H, W) integer segmentation (0:
    background); `mask` (D, H, W) bool or None."""

    image: np.ndarray
    labels: np.ndarray
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        spatial = self.image.shape[1:]
        if self.labels.shape != spatial:
            raise InputError(f"train data: the labels' shape {self.labels.shape} differs from the image's "
                             f"{spatial}; give a segmentation of the same volume")
        if self.mask is not None and self.mask.shape != spatial:
            raise InputError(f"train data: the mask's shape {self.mask.shape} differs from the image's {spatial}")

    def region(self, z: slice) -> Volumes:
        """The slab of sections `z` (a training or validation region)."""
        return Volumes(self.image[:, z], self.labels[z], None if self.mask is None else self.mask[z])


def boundary(labels: np.ndarray) -> np.ndarray:
    """(1, D, H, W) float32: 1 on background and where a voxel's label differs from a neighbour's."""
    edge = labels == 0
    for axis in range(3):
        differ = np.diff(labels, axis=axis) != 0
        before = [slice(None)] * 3
        after = [slice(None)] * 3
        before[axis], after[axis] = slice(None, -1), slice(1, None)
        edge[tuple(before)] |= differ
        edge[tuple(after)] |= differ
    return edge[None].astype(np.float32)


def target(kind: str, labels: np.ndarray) -> np.ndarray:
    """The `kind` target of a label box with one voxel of margin on every side, less the margin."""
    core = (slice(1, -1),) * 3
    if kind == "boundary":
        return boundary(labels)[(slice(None), *core)]
    return affinities(labels)[(slice(None), *core)]


def rebalanced(truth: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Weights giving each class of each channel half the weight of that channel (ZNN's rebalance);
    a channel with one class only weighs 1 everywhere; masked-out voxels 0."""
    weights = np.ones_like(truth)
    valid = np.ones(truth.shape[1:], bool) if mask is None else mask
    count = max(int(valid.sum()), 1)
    for c in range(truth.shape[0]):
        positive = (truth[c] > 0.5) & valid
        share = positive.sum() / count
        if 0 < share < 1:
            weights[c] = np.where(truth[c] > 0.5, 0.5 / share, 0.5 / (1 - share))
    return weights * valid


@dataclass(frozen=True)
class Sample:
    image: np.ndarray
    target: np.ndarray
    weight: np.ndarray


@dataclass(frozen=True)
class Window:
    """A training patch: the net's input size, its output size, and where output voxel 0 lies in the
    input (integer voxels)."""

    input: tuple[int, int, int]
    output: tuple[int, int, int]
    offset: tuple[int, int, int]

    def symmetric(self, axis: int) -> bool:
        return 2 * self.offset[axis] + self.output[axis] == self.input[axis]


class Sampler:
    """Random patches of `volumes` for the net's `window`, with `kind` targets."""

    def __init__(self, volumes: Volumes, window: Window, kind: str, rebalance: bool, augment: Augment,
                 seed: int) -> None:
        if kind not in TARGETS:
            raise InputError(f"train data: target {kind!r} is not one of {sorted(TARGETS)}")
        spatial = volumes.image.shape[1:]
        if any(s < i for s, i in zip(spatial, window.input)):
            raise InputError(f"train data: the training region {spatial} is smaller than the net's input patch "
                             f"{window.input}; use a smaller --patch or a larger region")
        self.volumes, self.window, self.kind = volumes, window, kind
        self.rebalance, self.augment, self.seed = rebalance, augment, seed

    def __call__(self, index: int) -> Sample:
        rng = np.random.default_rng([self.seed, index])
        w, v = self.window, self.volumes
        corner = [int(rng.integers(0, s - i + 1)) for s, i in zip(v.image.shape[1:], w.input)]
        image = v.image[(slice(None), *(slice(c, c + i) for c, i in zip(corner, w.input)))]
        start = [c + o for c, o in zip(corner, w.offset)]
        labels = _padded(v.labels, start, w.output)
        mask = None if v.mask is None else _padded(v.mask, start, w.output)[1:-1, 1:-1, 1:-1]
        image, labels, mask = self._geometric(rng, image, labels, mask)
        image = self._photometric(rng, np.array(image, np.float32))
        truth = target(self.kind, labels)
        weight = rebalanced(truth, mask) if self.rebalance else np.broadcast_to(
            np.ones(truth.shape[1:], np.float32) if mask is None else mask.astype(np.float32), truth.shape).copy()
        return Sample(np.ascontiguousarray(image), truth, weight.astype(np.float32))

    def _geometric(self, rng: np.random.Generator, image: np.ndarray, labels: np.ndarray,
                   mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        a, w = self.augment, self.window
        if a.flips:
            for axis in range(3):
                if w.symmetric(axis) and rng.random() < 0.5:
                    image, labels = np.flip(image, axis + 1), np.flip(labels, axis)
                    mask = None if mask is None else np.flip(mask, axis)
        square = w.input[1] == w.input[2] and w.output[1] == w.output[2] and w.offset[1] == w.offset[2]
        if a.transpose and square and rng.random() < 0.5:
            image, labels = image.swapaxes(2, 3), labels.swapaxes(1, 2)
            mask = None if mask is None else mask.swapaxes(1, 2)
        return image, labels, mask

    def _photometric(self, rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
        a = self.augment
        if a.jitter:
            image = image * np.float32(1 + rng.uniform(-a.jitter, a.jitter)) + np.float32(rng.uniform(-a.jitter,
                                                                                                      a.jitter))
        depth = image.shape[1]
        if a.missing and depth > 1 and rng.random() < a.missing:
            image[:, int(rng.integers(depth))] = image.mean()
        if a.misalign and depth > 1 and rng.random() < 0.5:
            z = int(rng.integers(1, depth))
            dy, dx = (int(rng.integers(-a.misalign, a.misalign + 1)) for _ in range(2))
            image[:, z:] = np.roll(image[:, z:], (dy, dx), axis=(2, 3))
        return image


def _padded(array: np.ndarray, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """array[start - 1 : start + size + 1] per axis, edge values repeated outside the array."""
    lo = [s - 1 for s in start]
    hi = [s + n + 1 for s, n in zip(start, size)]
    inside = tuple(slice(max(a, 0), min(b, n)) for a, b, n in zip(lo, hi, array.shape))
    pad = [(max(0, -a), max(0, b - n)) for a, b, n in zip(lo, hi, array.shape)]
    return np.pad(array[inside], pad, mode="edge")


def batches(sampler: Sampler, first: int, count: int, batch: int, threads: int = 2,
            ahead: int = 4) -> Iterator[list[Sample]]:
    """Batches `first` to `first + count - 1` of `batch` samples each, read `ahead` batches in
    advance by `threads` background threads (NumPy releases the GIL in its copies, so reading
    overlaps the step)."""
    indices = iter(range(first * batch, (first + count) * batch))
    pending: collections.deque[concurrent.futures.Future[Sample]] = collections.deque()
    with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
        for _ in range(count):
            for index in itertools.islice(indices, (ahead + 1) * batch - len(pending)):
                pending.append(pool.submit(sampler, index))
            yield [pending.popleft().result() for _ in range(batch)]


def tiles(spatial: Sequence[int], window: Window) -> list[tuple[int, int, int]]:
    """Input corners whose output windows cover the valid output of a region of `spatial` voxels."""
    valid = [s - (i - o) for s, i, o in zip(spatial, window.input, window.output)]
    grids = [window_starts(v, o, 0.0) for v, o in zip(valid, window.output)]
    return [(a, b, c) for a in grids[0] for b in grids[1] for c in grids[2]]


def output_box(spatial: Sequence[int], window: Window) -> tuple[slice, ...]:
    """Where the valid output of a region lies in the region's own coordinates."""
    return tuple(slice(o, o + s - (i - out)) for s, i, out, o in zip(spatial, window.input, window.output,
                                                                      window.offset))


def split_region(depth: int, fraction: float) -> tuple[slice, slice]:
    """(training, validation) z ranges: the last `fraction` of the sections held out."""
    held = max(1, math.ceil(depth * fraction))
    return slice(0, depth - held), slice(depth - held, depth)
