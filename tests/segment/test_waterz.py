"""Against waterz (Zlateski's watershed and mean-affinity agglomeration in C++): on affinities
without exact ties and with no size-dependent single linkage, znnx's basins and segmentation cut
the voxels into the same sets."""

from __future__ import annotations

import numpy as np
import pytest

from znnx.segment import SegmentOptions, segment_array
from znnx.segment.metrics import same_partition
from znnx.segment.synthetic import affinities, cells, noisy

waterz = pytest.importorskip("waterz")


@pytest.mark.parametrize("seed", [0, 1])
def test_same_basins_and_segmentation_as_waterz(seed: int) -> None:
    aff = noisy(affinities(cells((20, 24, 22), 6, seed=seed)), 0.35, seed=seed)
    labels, _, basins = segment_array(aff, SegmentOptions(size=0, threshold=0.5))
    theirs = waterz.agglomerate(aff, [0.0, 0.5], aff_threshold_low=0.0001, aff_threshold_high=0.9999)
    their_basins = next(theirs).copy()
    their_labels = next(theirs).copy()
    assert len(np.unique(basins)) > 100 and len(np.unique(labels)) < len(np.unique(basins))
    assert same_partition(basins, their_basins)
    assert same_partition(labels, their_labels)
