"""Block geometry, property-tested: write boxes tile the roi exactly once, reads stay where the
whole-volume run would read, exact blocks write only exact voxels, and blend weights sum to one."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from znnx.errors import InputError
from znnx.volume.blend import blend, window_weights
from znnx.volume.block import Box, Tiling, blend_blocks, exact_blocks, padded_extent, whole


@st.composite
def tilings(draw: st.DrawFn) -> Tiling:
    same = draw(st.booleans())
    rank = 3
    align = tuple(draw(st.sampled_from([1, 2, 4])) for _ in range(rank))
    if same:
        margin = tuple(a * draw(st.integers(0, 3)) for a in align)
        patch = tuple(2 * m + a * draw(st.integers(1, 4)) for m, a in zip(margin, align))
        return Tiling(patch, patch, (0,) * rank, align, margin, True)
    out = tuple(a * draw(st.integers(1, 4)) + draw(st.integers(0, a - 1)) for a in align)
    context = tuple(draw(st.integers(0, 6)) for _ in range(rank))
    offset = tuple(c // 2 for c in context)
    return Tiling(tuple(q + c for q, c in zip(out, context)), out, offset, align, (0,) * rank, False)


@st.composite
def volumes_and_rois(draw: st.DrawFn) -> tuple[tuple[int, ...], Box]:
    volume = tuple(draw(st.integers(1, 23)) for _ in range(3))
    start = tuple(draw(st.integers(0, v - 1)) for v in volume)
    stop = tuple(draw(st.integers(a + 1, v)) for a, v in zip(start, volume))
    return volume, draw(st.sampled_from([whole(volume), Box(start, stop)]))


def _count(volume: tuple[int, ...], boxes: list[Box]) -> np.ndarray:
    hits = np.zeros(volume, np.int32)
    for box in boxes:
        hits[box.slices()] += 1
    return hits


@settings(max_examples=300, deadline=None)
@given(tilings(), volumes_and_rois())
def test_exact_write_boxes_cover_the_roi_once_and_only_exact_voxels(t: Tiling, case: tuple) -> None:
    volume, roi = case
    blocks = exact_blocks(volume, t, roi)
    hits = _count(volume, [b.write for b in blocks])
    inside = np.zeros(volume, bool)
    inside[roi.slices()] = True
    assert (hits[inside] == 1).all() and (hits[~inside] == 0).all()
    extent = padded_extent(volume, t)
    for block in blocks:
        (read,), (out,) = block.reads, block.outputs
        assert read.shape == t.patch_in and out.shape == t.patch_out
        for axis in range(3):
            a, m = t.downsampling[axis], t.margin[axis]
            # the patch sits on the whole-volume run's pooling grid
            assert (read.start[axis] + t.offset[axis]) % a == 0
            assert out.start[axis] == read.start[axis] + t.offset[axis]
            # only voxels the patch computes exactly are written
            low = out.start[axis] if out.start[axis] == 0 else out.start[axis] + m
            high = out.stop[axis] if out.stop[axis] == extent[axis] else out.stop[axis] - m
            assert low <= block.write.start[axis] and block.write.stop[axis] <= high
            if t.same:  # same-padded nets read inside the zero-padded volume only
                assert read.start[axis] >= 0 and read.stop[axis] <= extent[axis]


@settings(max_examples=200, deadline=None)
@given(tilings(), volumes_and_rois(), st.tuples(*(st.sampled_from([0.0, 0.25, 0.5, 0.7]),) * 3),
       st.sampled_from(["gaussian", "bump", "constant"]), st.tuples(*(st.integers(1, 12),) * 3))
def test_blend_weights_sum_to_one_everywhere(t: Tiling, case: tuple, overlap: tuple, kind: str,
                                             block: tuple[int, ...]) -> None:
    volume, roi = case
    blocks = blend_blocks(volume, t, overlap, block, roi)
    assert (_count(volume, [b.write for b in blocks])[roi.slices()] == 1).all()
    weights = window_weights(kind, t.patch_out)
    assert (weights > 0).all() and weights.max() == pytest.approx(1)
    for b in blocks:
        ones = [np.ones((1, *t.patch_out), np.float32) for _ in b.outputs]
        assert np.allclose(blend(b.write, b.outputs, ones, weights), 1, atol=1e-6)


def test_blend_averages_overlapping_windows_by_weight() -> None:
    write = Box((0,), (4,))
    weights = np.array([1.0, 1.0, 1.0], np.float32)
    values = [np.full((1, 3), 2.0, np.float32), np.full((1, 3), 4.0, np.float32)]
    assert blend(write, [Box((0,), (3,)), Box((1,), (4,))], values, weights).tolist() == [[2.0, 3.0, 3.0, 4.0]]



def test_blend_copies_windows_that_tile_the_write_box_and_refuses_gaps() -> None:
    weights = np.array([0.001, 1.0, 0.5], np.float32)
    tiles = [np.array([[1.0, 2.0, 3.0]], np.float32), np.array([[4.0, 5.0, 6.0]], np.float32)]
    assert blend(Box((1,), (5,)), [Box((0,), (3,)), Box((3,), (6,))], tiles, weights).tolist() == [[2.0, 3.0, 4.0, 5.0]]
    ones = [np.ones((1, 3), np.float32)] * 2
    with pytest.raises(InputError, match="uncovered"):  # sizes add up to the box's, but 5 is left out
        blend(Box((0,), (6,)), [Box((0,), (3,)), Box((2,), (5,))], ones, weights)

def test_exact_blocks_refuse_a_patch_without_exact_output() -> None:
    t = Tiling((16, 16, 16), (16, 16, 16), (0, 0, 0), (4, 4, 4), (8, 8, 8), True)
    with pytest.raises(InputError, match=r"gives no exact output along axis 0.*larger than 20"):
        exact_blocks((50, 50, 50), t)


def test_windows_end_at_the_volume_end_like_monai() -> None:
    from znnx.volume.block import window_starts

    assert window_starts(100, 40, 0.25) == [0, 30, 60]
    assert window_starts(30, 40, 0.25) == [0]
    assert list(itertools.pairwise(window_starts(256, 64, 0.5)))[-1] == (160, 192)
