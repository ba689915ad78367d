"""Single linkage and agglomeration against merge-by-merge recomputation from the voxels, and the
frozen-region rule: a box that is the whole volume decides everything, an inner box defers."""

from __future__ import annotations

import numpy as np
import pytest

from tests.segment import naive
from znnx.segment.basins import basins
from znnx.segment.graph import block_graph, remap
from znnx.segment.hierarchy import roots
from znnx.segment.merging import NO_ALIASES, NO_EVENTS, Box, agglomerate, frozen, single_linkage


def _case(seed: int, levels: int | None) -> tuple[np.ndarray, np.ndarray]:
    from znnx.segment.synthetic import affinities, cells, noisy

    truth = cells((10, 11, 9), 4, seed=seed)
    aff = noisy(affinities(truth), 0.45, seed=seed)
    if levels is not None:
        aff = (np.round(aff * levels) / levels).astype(np.float32)
    shape = aff.shape[1:]
    return aff, basins(aff, tuple(slice(0, n) for n in shape), (0, 0, 0), shape, 0.05, 0.99).labels


def _whole(shape: tuple[int, ...]) -> Box:
    return Box((0, 0, 0), shape, shape)  # type: ignore[arg-type]


@pytest.mark.parametrize(("seed", "levels"), [(0, None), (1, 4)])
def test_single_linkage_equals_the_definition(seed: int, levels: int | None) -> None:
    aff, fragments = _case(seed, levels)
    regions, edges = block_graph(fragments, aff, (0, 0, 0), (False,) * 3, False)
    linked = single_linkage(regions, edges, NO_ALIASES, NO_EVENTS, _whole(fragments.shape), 0.05, 12)
    assert len(linked.edges) == 0 and len(linked.regions.ids) == 0  # nothing deferred in the whole volume
    assert np.array_equal(remap(fragments, *roots(linked.merges)), naive.single_linkage(fragments, aff, 0.05, 12))


@pytest.mark.parametrize(("kind", "seed", "levels"), [("mean", 0, None), ("mean", 2, 3), ("median", 3, None),
                                                      ("max", 4, None)])
def test_agglomeration_equals_merge_by_merge_recomputation(kind: str, seed: int, levels: int | None) -> None:
    aff, fragments = _case(seed, levels)
    regions, edges = block_graph(fragments, aff, (0, 0, 0), (False,) * 3, kind == "median")
    merged = agglomerate(regions, edges, _whole(fragments.shape), kind, 0.45)
    got = remap(fragments, *roots(merged.merges))
    assert len(merged.merges) > 5
    assert np.array_equal(got, naive.agglomerate(fragments, aff, kind, 0.45))
    assert (np.diff(merged.scores) <= 0).all()  # reducible scores: merges come in decreasing order


def test_regions_at_inner_faces_are_frozen_and_their_edges_wait() -> None:
    aff, fragments = _case(5, None)
    shape = fragments.shape
    box = Box((0, 0, 0), (5, shape[1], shape[2]), shape)
    inside = fragments.copy()
    inside[5:] = 0  # the box's part of the volume
    regions, edges = block_graph(inside, aff, (0, 0, 0), (False,) * 3, False)
    cold = frozen(regions, box)
    assert cold.any() and not cold.all()
    assert (regions.hi[cold, 0] >= 4).all() and (regions.hi[~cold, 0] < 4).all()
    merged = agglomerate(regions, edges, box, "mean", 0.3)
    left = set(merged.regions.ids.tolist())
    assert set(regions.ids[cold].tolist()) <= left
    assert all(a in left or b in left for a, b in zip(merged.edges.a, merged.edges.b))
    assert not set(merged.merges.reshape(-1).tolist()) & set(regions.ids[cold].tolist())
