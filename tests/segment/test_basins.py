"""The watershed kernel against the definition, voxel by voxel: whole volumes and cores read with a
halo, continuous affinities and quantized ones (plateaus everywhere)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.segment import naive
from znnx.errors import InputError
from znnx.segment.basins import HALO, basins


def _affinities(shape: tuple[int, int, int], levels: int | None, seed: int) -> np.ndarray:
    aff = np.random.default_rng(seed).random((3, *shape)).astype(np.float32)
    return aff if levels is None else (np.round(aff * levels) / levels).astype(np.float32)


@pytest.mark.parametrize(("shape", "levels", "seed"), [((5, 6, 7), None, 0), ((6, 5, 4), 3, 1), ((4, 7, 6), 1, 2),
                                                       ((1, 9, 8), 4, 3)])
def test_basins_follow_the_definition(shape: tuple[int, int, int], levels: int | None, seed: int) -> None:
    aff = _affinities(shape, levels, seed)
    whole = tuple(slice(0, n) for n in shape)
    got = basins(aff, whole, (0, 0, 0), shape, 0.1, 0.95).labels
    assert np.array_equal(got, naive.basins(aff, 0.1, 0.95))


@pytest.mark.parametrize("levels", [None, 2])
def test_a_core_with_a_halo_is_labelled_as_in_the_whole(levels: int | None) -> None:
    """Within a core, voxels joined in the whole volume without leaving the core share a label;
    the links name every edge that leaves the core."""
    shape = (12, 11, 13)
    aff = _affinities(shape, levels, 5)
    whole = naive.basins(aff, 0.05, 0.9)
    core = (slice(4, 9), slice(3, 7), slice(5, 11))
    read = tuple(slice(max(c.start - HALO, 0), min(c.stop + HALO, n)) for c, n in zip(core, shape))
    inner = tuple(slice(c.start - r.start, c.stop - r.start) for c, r in zip(core, read))
    got = basins(aff[(slice(None), *read)], inner, [r.start for r in read], shape, 0.05, 0.9)
    expected = whole[core]
    assert np.array_equal(got.labels == 0, expected == 0)
    # same partition up to the links: every pair of core voxels sharing a label shares one in the whole
    fg = got.labels > 0
    pairs = np.unique(np.stack([got.labels[fg], expected[fg]]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1]
    for a, b in got.links:
        assert whole.reshape(-1)[a] == whole.reshape(-1)[b]


def test_thresholds_are_checked() -> None:
    aff = _affinities((3, 3, 3), None, 0)
    with pytest.raises(InputError, match="low < high"):
        basins(aff, (slice(0, 3),) * 3, (0, 0, 0), (3, 3, 3), 0.9, 0.5)
