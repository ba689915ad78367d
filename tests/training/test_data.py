"""Training data: targets from a segmentation, rebalancing, reproducible samples, augmentation that
keeps the image and its target aligned, read-ahead in order."""

from __future__ import annotations

import numpy as np
import pytest

from znnx.errors import InputError
from znnx.training.data import (
    Augment,
    Sampler,
    Volumes,
    Window,
    batches,
    boundary,
    output_box,
    rebalanced,
    target,
    tiles,
)
from znnx.training.synthetic import em_volume


def test_boundary_marks_background_and_label_changes() -> None:
    labels = np.ones((3, 4, 5), np.int64)
    labels[:, :, 3:] = 2
    labels[0, 0, 0] = 0
    edge = boundary(labels)[0]
    assert edge[:, :, 2:4].all() and not edge[2:, 1:, :2].any() and edge[0, 0, 0] and edge[1, 0, 0] and edge[0, 0, 1]


def test_affinity_target_with_margin() -> None:
    labels = np.ones((6, 6, 6), np.int64)
    labels[3:] = 2
    aff = target("affinity", labels)
    assert aff.shape == (3, 4, 4, 4)
    assert not aff[0, 2].any() and aff[0, 1].all() and aff[1:].all()


def test_rebalanced_gives_each_class_half() -> None:
    truth = np.zeros((1, 10, 10, 10), np.float32)
    truth[0, :2] = 1
    weights = rebalanced(truth, None)
    assert np.isclose(weights[truth > 0.5].sum(), weights[truth < 0.5].sum())
    mask = np.zeros((10, 10, 10), bool)
    mask[:5] = True
    assert not rebalanced(truth, mask)[0, 5:].any()


def _sampler(augment: Augment, kind: str = "boundary") -> Sampler:
    _, labels = em_volume((40, 36, 36), 8, seed=1)
    # the image is the exact boundary map, so each sample's target must equal its image's output window
    volumes = Volumes(boundary(labels.astype(np.int64)), labels.astype(np.int64))
    return Sampler(volumes, Window((14, 12, 12), (10, 8, 8), (2, 2, 2)), kind, False, augment, seed=4)


def test_samples_depend_on_index_alone() -> None:
    sampler = _sampler(Augment())
    first = [sampler(i) for i in (5, 2, 9)]
    again = [sampler(i) for i in (9, 5, 2)]
    for a, b in zip(first, [again[1], again[2], again[0]]):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.target, b.target)
    assert not np.array_equal(first[0].image, first[1].image)


def test_augmentation_keeps_image_and_target_aligned() -> None:
    sampler = _sampler(Augment(flips=True, transpose=True, jitter=0.0))
    box = (slice(None), *(slice(o, o + n) for o, n in zip((2, 2, 2), (10, 8, 8))))
    seen = set()
    for i in range(24):
        sample = sampler(i)
        assert np.array_equal(sample.image[box], sample.target)
        seen.add(sample.image.tobytes())
    assert len(seen) == 24


def test_flips_skip_axes_with_asymmetric_margins() -> None:
    window = Window((13, 12, 12), (10, 8, 8), (2, 2, 2))
    assert not window.symmetric(0) and window.symmetric(1)


def test_batches_come_in_order() -> None:
    sampler = _sampler(Augment.none())
    got = [s.image for batch in batches(sampler, 2, 3, 2, threads=3) for s in batch]
    assert all(np.array_equal(g, sampler(i).image) for g, i in zip(got, range(4, 10)))


def test_small_region_is_refused() -> None:
    volumes = Volumes(np.zeros((1, 8, 8, 8), np.float32), np.ones((8, 8, 8), np.int64))
    with pytest.raises(InputError, match="smaller than the net's input patch"):
        Sampler(volumes, Window((10, 8, 8), (10, 8, 8), (0, 0, 0)), "boundary", True, Augment(), 0)


def test_tiles_cover_the_valid_output() -> None:
    window = Window((14, 12, 12), (10, 8, 8), (2, 2, 2))
    covered = np.zeros((33, 30, 31), int)
    box = output_box(covered.shape, window)
    for corner in tiles(covered.shape, window):
        covered[tuple(slice(c + o, c + o + n) for c, o, n in zip(corner, window.offset, window.output))] += 1
    assert covered[box].min() >= 1 and covered.sum() == covered[box].sum()
