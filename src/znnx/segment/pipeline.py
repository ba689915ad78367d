"""Segmentation of an affinity volume: watershed basins, size-dependent single linkage, then
agglomeration, in memory or chunk by chunk with the same result.

Chunked, the work is a sequence of steps, each a set of independent tasks whose results are files
in a work folder beside the output (written whole, then renamed into place, so a task's file is
either complete or absent; a rerun skips the tasks whose files exist: the ledger of each round):

1. basins: each chunk's basins (read with a halo, `basins.HALO`), saved as a raw array (local ids), and
   the watershed edges that leave the chunk;
2. join: the basins joined across chunks (one small union over the links);
3. graph: each chunk's regions (size, box) and region-graph edges (it owns the edges to the voxels
   before it);
4. linkage rounds, then 5. agglomeration rounds: round r merges in boxes of 2^r chunks per axis,
   deciding what it can and leaving frozen regions and their edges to round r + 1;
6. write: each chunk's fragments relabelled to their final labels, from the merge tables of the boxes
   that hold the chunk (`final_labels`).

A segmentation in memory runs the same functions on one chunk that is the whole volume.
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from znnx import status
from znnx.errors import InputError, StorageError
from znnx.segment.basins import HALO, basins, check_thresholds
from znnx.segment.files import replace
from znnx.segment.graph import (
    SCORES,
    Edges,
    Regions,
    block_graph,
    combine_edges,
    combine_regions,
    relabel_edges,
    relabel_regions,
    remap,
)
from znnx.segment.hierarchy import Hierarchy, roots
from znnx.segment.merging import NO_ALIASES, NO_EVENTS, NO_FINALS, Box, Outcome, agglomerate, single_linkage
from znnx.volume import storage

Shape = tuple[int, int, int]


@dataclass(frozen=True)
class SegmentOptions:
    """Watershed thresholds (`low`, `high`), the size below which single linkage merges a basin,
    the agglomeration's score (mean, median or max interface affinity) and the threshold it merges
    above."""

    low: float = 0.0001
    high: float = 0.9999
    size: int = 25
    score: str = "mean"
    threshold: float = 0.5

    def check(self) -> None:
        check_thresholds(self.low, self.high)
        if self.score not in SCORES:
            raise InputError(f"segment: score must be one of {', '.join(SCORES)}, got {self.score!r}")
        if self.size < 0:
            raise InputError(f"segment: size threshold must be >= 0, got {self.size}")


@dataclass(frozen=True)
class Job:
    """What every task of a chunked segmentation needs: small, sent with each task."""

    source: str
    work: str
    shape: Shape
    chunk: Shape
    options: SegmentOptions

    def box(self, level: int, index: Sequence[int]) -> Box:
        side = [c << level for c in self.chunk]
        start = tuple(i * s for i, s in zip(index, side))
        stop = tuple(min((i + 1) * s, n) for i, s, n in zip(index, side, self.shape))
        return Box(start, stop, self.shape)  # type: ignore[arg-type]

    def path(self, *parts: str) -> Path:
        return Path(self.work, *parts)


def read_affinities(volume: storage.Volume, index: tuple[slice, ...]) -> np.ndarray:
    """Affinities (3, ...) of the voxels `index` as float32 in [0, 1] from an affinity volume
    (3, D, H, W) or a boundary map ((D, H, W) or (1, D, H, W), 1 on boundaries: an edge's affinity
    is 1 - the larger boundary value of its two voxels, so a block reads one voxel more before it);
    integer volumes are scaled by their dtype's maximum."""
    spatial = tuple(slice(s.start or 0, s.stop) for s in index)
    channels = volume.shape[0] if len(volume.shape) == 4 else 1
    before = [int(s.start > 0) if channels < 3 else 0 for s in spatial]
    wider = tuple(slice(s.start - b, s.stop) for s, b in zip(spatial, before))
    data = volume.read(((slice(None),) if len(volume.shape) == 4 else ()) + wider)
    if np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float32) / np.iinfo(data.dtype).max
    data = data.astype(np.float32, copy=False)
    if channels >= 3:
        return data[:3]
    boundary = data.reshape(data.shape[-3:])
    aff = np.zeros((3, *boundary.shape), np.float32)
    for axis in range(3):
        here = [slice(None)] * 3
        previous = [slice(None)] * 3
        here[axis], previous[axis] = slice(1, None), slice(None, -1)
        aff[axis][tuple(here)] = 1.0 - np.maximum(boundary[tuple(here)], boundary[tuple(previous)])
    return aff[(slice(None), *(slice(b, None) for b in before))]


def spatial_shape(volume: storage.Volume) -> Shape:
    shape = volume.shape
    if (len(shape) == 4 and shape[0] in (1, 3)) or len(shape) == 3:
        return tuple(int(n) for n in shape[-3:])  # type: ignore[return-value]
    raise InputError(f"segment: {volume.location} has shape {shape}; give affinities (3, D, H, W) or a boundary "
                     f"map (D, H, W) or (1, D, H, W)")


def _save(path: Path, **arrays: np.ndarray) -> None:
    replace(path, lambda handle: np.savez(handle, **arrays))  # type: ignore[arg-type]


def _regions_arrays(prefix: str, regions: Regions) -> dict[str, np.ndarray]:
    return {f"{prefix}ids": regions.ids, f"{prefix}size": regions.size, f"{prefix}lo": regions.lo,
            f"{prefix}hi": regions.hi, f"{prefix}least": regions.least}


def _edges_arrays(edges: Edges) -> dict[str, np.ndarray]:
    arrays = {"a": edges.a, "b": edges.b, "count": edges.count, "total": edges.total, "peak": edges.peak}
    return arrays | ({"hist": edges.hist} if edges.hist is not None else {})


def _load(path: Path) -> tuple[Regions, Edges, dict[str, np.ndarray]]:
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    regions = Regions(arrays["ids"], arrays["size"], arrays["lo"], arrays["hi"], arrays["least"])
    edges = Edges(arrays["a"], arrays["b"], arrays["count"], arrays["total"], arrays["peak"], arrays.get("hist"))
    return regions, edges, arrays


def _name(index: Sequence[int], suffix: str = ".npz") -> str:
    return "_".join(map(str, index)) + suffix


def _core(job: Job, index: Sequence[int]) -> tuple[slice, ...]:
    box = job.box(0, index)
    return tuple(slice(a, b) for a, b in zip(box.start, box.stop))


def basins_task(job: Job, index: tuple[int, int, int]) -> None:
    """Step 1: a chunk's basins into the fragments array, its outward links and face labels saved."""
    target = job.path("basins", _name(index))
    if target.exists():
        return
    core = _core(job, index)
    read = tuple(slice(max(s.start - HALO, 0), min(s.stop + HALO, n)) for s, n in zip(core, job.shape))
    aff = read_affinities(storage.open_volume(job.source), read)
    inner = tuple(slice(s.start - r.start, s.stop - r.start) for s, r in zip(core, read))
    found = basins(aff, inner, [r.start for r in read], job.shape, job.options.low, job.options.high)
    replace(job.path("fragments", _name(index, ".npy")), lambda handle: np.save(handle, found.labels))
    _save(target, links=found.links, face=_face(found.labels, core, job.shape))


def _fragments(job: Job, index: Sequence[int], lower: Sequence[bool] = (False, False, False)) -> np.ndarray:
    """A chunk's basin labels as step 1 left them (local ids), with the planes of the chunks
    before it on each axis where `lower` is true (edges and corners of that halo are 0)."""
    def load(at: Sequence[int]) -> np.ndarray:
        return np.load(job.path("fragments", _name(at, ".npy")), mmap_mode="r")

    own = load(index)
    start = [int(flag) for flag in lower]
    labels = np.zeros([n + s for n, s in zip(own.shape, start)], np.int64)
    labels[start[0]:, start[1]:, start[2]:] = own
    for axis in range(3):
        if lower[axis]:
            before = list(index)
            before[axis] -= 1
            target = [slice(s, None) for s in start]
            target[axis] = slice(0, 1)
            source = [slice(None)] * 3
            source[axis] = slice(-1, None)
            labels[tuple(target)] = load(before)[tuple(source)]
    return labels


def _face(labels: np.ndarray, core: tuple[slice, ...], shape: Shape) -> np.ndarray:
    """(global linear index, label) of the chunk's outermost voxels, sorted by index."""
    mask = np.zeros(labels.shape, bool)
    for axis in range(3):
        for end in (0, -1):
            index = [slice(None)] * 3
            index[axis] = end  # type: ignore[call-overload]
            mask[tuple(index)] = True
    coords = np.nonzero(mask)
    flat = np.ravel_multi_index(tuple(c + s.start for c, s in zip(coords, core)), shape)
    order = np.argsort(flat)
    return np.stack([flat[order], labels[coords][order]], axis=1)


def join_step(job: Job) -> None:
    """Step 2: basins joined across chunks: (local label, basin id) for every label a link reaches."""
    target = job.path("join.npz")
    if target.exists():
        return
    faces, links = [], []
    for index in _level_grid(job, 0):
        with np.load(job.path("basins", _name(index))) as data:
            faces.append(data["face"])
            links.append(data["links"])
    face = np.concatenate(faces)
    face = face[np.argsort(face[:, 0])]
    link = np.concatenate(links)

    def label(at: np.ndarray) -> np.ndarray:
        return face[np.searchsorted(face[:, 0], at), 1]

    pairs = np.stack([label(link[:, 0]), label(link[:, 1])], axis=1) if len(link) else NO_ALIASES
    ids, root = roots(pairs)
    _save(target, ids=ids, roots=root)


def _joined(job: Job) -> tuple[np.ndarray, np.ndarray]:
    with np.load(job.path("join.npz")) as data:
        return data["ids"], data["roots"]


def graph_task(job: Job, index: tuple[int, int, int]) -> None:
    """Step 3: a chunk's regions and the edges it owns, in basin ids."""
    target = job.path("graph", _name(index))
    if target.exists():
        return
    regions, edges = _chunk_graph(job, index, False, False)
    _save(target, **_regions_arrays("", regions), **_edges_arrays(edges))


def _chunk_graph(job: Job, index: tuple[int, int, int], linked: bool, histogram: bool) -> tuple[Regions, Edges]:
    """A chunk's regions and edges between its basins, or (`linked`) between their regions after
    single linkage."""
    core = _core(job, index)
    lower = [s.start > 0 for s in core]
    labels = remap(_fragments(job, index, lower), *_joined(job))
    if linked:
        labels = remap(labels, *_mapping(job, "linkage", [index, *_lower(job, index)], labels))
    aff = read_affinities(storage.open_volume(job.source), core)
    return block_graph(labels, aff, [s.start for s in core], lower, histogram)


def _boxes(job: Job, level: int) -> Shape:
    """How many boxes of round `level` (2^level chunks a side) cover the volume on each axis."""
    return tuple(-(-n // (c << level)) for n, c in zip(job.shape, job.chunk))  # type: ignore[return-value]


def _children(job: Job, level: int, index: Sequence[int]) -> list[tuple[int, ...]]:
    below = _boxes(job, level - 1)
    return [c for c in itertools.product(*[(2 * i, 2 * i + 1) for i in index])
            if all(x < g for x, g in zip(c, below))]


def _level_grid(job: Job, level: int) -> list[tuple[int, int, int]]:
    return [(z, y, x) for z, y, x in itertools.product(*map(range, _boxes(job, level)))]


def _levels(job: Job) -> int:
    """Rounds until one box holds the volume."""
    level = 0
    while any((c << level) < n for c, n in zip(job.chunk, job.shape)):
        level += 1
    return level + 1


def _inputs(job: Job, stage: str, level: int,
            index: tuple[int, int, int]) -> tuple[Regions, Edges, np.ndarray, np.ndarray]:
    histogram = stage == "agglomerate" and job.options.score == "median"
    if level == 0:
        regions, edges, _ = _load(job.path("graph", _name(index)))
        if stage == "linkage":
            return regions, combine_edges([edges], False), NO_ALIASES, NO_EVENTS
        if histogram:  # the median needs histograms, made for the regions only (far fewer edges than basins')
            regions, edges = _chunk_graph(job, index, True, True)
            return regions, edges, NO_ALIASES, NO_EVENTS
        ids, root = _mapping(job, "linkage", [index, *_lower(job, index)],
                             np.concatenate([regions.ids, edges.a, edges.b]))
        return relabel_regions(regions, ids, root), relabel_edges(edges, ids, root), NO_ALIASES, NO_EVENTS
    parts = [_load(job.path(stage, str(level - 1), _name(c))) for c in _children(job, level, index)]
    aliases = np.concatenate([p[2]["aliases"] for p in parts])
    events = np.concatenate([p[2]["events"] for p in parts])
    return (combine_regions([p[0] for p in parts]), combine_edges([p[1] for p in parts], histogram), aliases,
            events)


def round_task(job: Job, stage: str, level: int, index: tuple[int, int, int]) -> None:
    """Steps 4 and 5: one box of one round of single linkage or agglomeration."""
    target = job.path(stage, str(level), _name(index))
    if target.exists():
        return
    regions, edges, aliases, events = _inputs(job, stage, level, index)
    outcome = _decide(stage, regions, edges, aliases, events, job.box(level, index), job.options)
    gone, into = _within(stage, outcome.merges)
    _save(target, **_regions_arrays("", outcome.regions), **_edges_arrays(outcome.edges), merges=outcome.merges,
          scores=outcome.scores, aliases=outcome.aliases, events=outcome.events, finals=outcome.finals, gone=gone,
          into=into)


def _decide(stage: str, regions: Regions, edges: Edges, aliases: np.ndarray, events: np.ndarray, box: Box,
            options: SegmentOptions) -> Outcome:
    if stage == "linkage":
        return single_linkage(regions, edges, aliases, events, box, options.low, options.size)
    return agglomerate(regions, edges, box, options.score, options.threshold)


def _merges(job: Job, stage: str) -> tuple[np.ndarray, np.ndarray]:
    pairs, scores = [], []
    for level in range(_levels(job)):
        for index in _level_grid(job, level):
            with np.load(job.path(stage, str(level), _name(index))) as data:
                pairs.append(data["merges"])
                scores.append(data["scores"])
    return np.concatenate(pairs), np.concatenate(scores)


def _lower(job: Job, index: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """The chunks before `index` on each axis (whose voxels its edges reach)."""
    return [(index[0] - (a == 0), index[1] - (a == 1), index[2] - (a == 2)) for a in range(3) if index[a] > 0]


def _within(stage: str, merges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A box's merges as sorted merged names and the name each ended under in the box."""
    pairs = merges.reshape(-1, 2)
    if stage == "agglomerate":  # a merged region keeps the smaller name
        pairs = np.stack([pairs.min(axis=1), pairs.max(axis=1)], axis=1)
    order = np.argsort(pairs[:, 1])
    gone, into = pairs[order, 1], pairs[order, 0]
    while True:  # each pass follows the chains twice as far
        further = remap(into, gone, into)
        if np.array_equal(further, into):
            return gone, into
        into = further


def final_labels(job: Job, stage: str, chunks: list[tuple[int, int, int]], values: np.ndarray) -> np.ndarray:
    """The labels after `stage` of `values`, ids of basins (or regions) with voxels in `chunks`.
    Every merge that moved such a region was made in a box holding one of the chunks, so the
    boxes holding them at each level, in order, are enough: memory follows those boxes, not the
    number of basins in the volume."""
    named = [NO_FINALS]
    for level in range(_levels(job)):
        for box in sorted({tuple(i >> level for i in chunk) for chunk in chunks}):
            with np.load(job.path(stage, str(level), _name(box))) as data:
                values = remap(values, data["gone"], data["into"])
                named.append(data["finals"])
    finals = np.concatenate(named)
    finals = finals[np.argsort(finals[:, 0])]
    return remap(values, finals[:, 0], finals[:, 1])


def _mapping(job: Job, stage: str, chunks: list[tuple[int, int, int]],
             values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids, labels) for `remap`: the distinct `values` and their final labels."""
    ids = np.unique(values)
    return ids, final_labels(job, stage, chunks, ids)


def write_task(job: Job, output: str, index: tuple[int, int, int]) -> None:
    """Step 6: a chunk's fragments relabelled to the final regions, into the output."""
    done = job.path("write", _name(index, ".done"))
    if done.exists():
        return
    core = _core(job, index)
    basins = remap(_fragments(job, index), *_joined(job))
    ids, inverse = np.unique(basins, return_inverse=True)
    labels = final_labels(job, "agglomerate", [index], final_labels(job, "linkage", [index], ids))
    labels = labels[inverse.reshape(basins.shape)]
    volume = storage.open_volume(output, writable=True)
    volume.write(core, labels.astype(np.uint64))
    volume.flush()
    done.parent.mkdir(parents=True, exist_ok=True)
    done.touch()


def segment_array(aff: np.ndarray, options: SegmentOptions | None = None) -> tuple[np.ndarray, Hierarchy, np.ndarray]:
    """Segment affinities (3, D, H, W) in memory: (labels, hierarchy, basins), labels and basins
    as uint64 with 0 for background."""
    options = options or SegmentOptions()
    options.check()
    aff = np.asarray(aff)
    if aff.ndim != 4 or aff.shape[0] != 3:
        raise InputError(f"segment: affinities must have shape (3, D, H, W), got {aff.shape}")
    shape: Shape = aff.shape[1:]  # type: ignore[assignment]
    whole = Box((0, 0, 0), shape, shape)
    fragments = basins(aff, tuple(slice(0, n) for n in shape), (0, 0, 0), shape, options.low, options.high).labels
    regions, edges = block_graph(fragments, aff, (0, 0, 0), (False, False, False), False)
    linked = single_linkage(regions, edges, NO_ALIASES, NO_EVENTS, whole, options.low, options.size)
    ids, root = roots(linked.merges)
    linked_labels = remap(fragments, ids, root)
    if options.score == "median":
        regions, edges = block_graph(linked_labels, aff, (0, 0, 0), (False, False, False), True)
    else:
        regions, edges = relabel_regions(regions, ids, root), relabel_edges(edges, ids, root)
    merged = agglomerate(regions, edges, whole, options.score, options.threshold)
    hierarchy = _hierarchy(linked.merges, linked.scores, merged.merges, merged.scores, options.threshold)
    labels = remap(linked_labels, *roots(merged.merges))
    return labels.astype(np.uint64), hierarchy, fragments.astype(np.uint64)


def _hierarchy(linked: np.ndarray, linked_scores: np.ndarray, merged: np.ndarray, merged_scores: np.ndarray,
               threshold: float) -> Hierarchy:
    pairs = np.concatenate([linked, merged]).reshape(-1, 2)
    stage = np.concatenate([np.zeros(len(linked), np.int8), np.ones(len(merged), np.int8)])
    return Hierarchy(pairs[:, 0].copy(), pairs[:, 1].copy(), np.concatenate([linked_scores, merged_scores]), stage,
                     threshold)


Mapper = Callable[[Callable[..., Any], list[Any]], Iterator[None]]
"""Runs `function` on every item somewhere, yielding once as each finishes (in any order)."""


def _check_work(job: Job, output: str) -> None:
    """Refuse a work folder left by a different segmentation; start one for this job."""
    path = job.path("job.json")
    description = json.dumps(asdict(job) | {"output": output}, sort_keys=True)
    if path.exists():
        if path.read_text() != description:
            raise StorageError(f"segment: {job.work} holds the unfinished work of another segmentation "
                               f"({path.read_text()}); delete it, or rerun that segmentation to finish it")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(description)


def run_chunked(job: Job, output: str, mapper: Mapper, fragments: str | None = None,
                steps: dict[str, float] | None = None) -> Hierarchy:
    """Every step of a chunked segmentation of `job` into `output` (created here unless the work
    folder shows a run to resume), each step's tasks through `mapper`; each step's seconds go to
    `steps`."""
    seconds = {} if steps is None else steps

    def timed(key: str, name: str, function: Callable[..., Any], items: list[Any] | None = None) -> None:
        began = time.perf_counter()
        status.report(f"segment: {name}", force=True)
        if items is None:
            function()
        else:
            for done, _ in enumerate(mapper(function, items), 1):
                status.report(f"segment: {name}: {done}/{len(items)} tasks, {time.perf_counter() - began:.0f} s")
        seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - began

    resuming = job.path("job.json").exists()
    _check_work(job, output)
    if not resuming or not storage.exists(storage.as_location(output)):
        storage.create_volume(output, job.shape, np.dtype(np.uint64), job.chunk)
    grid = _level_grid(job, 0)
    timed("basins", "basins", _bound(basins_task, job), grid)
    timed("join", "join", partial(join_step, job))
    timed("graph", "region graph", _bound(graph_task, job), grid)
    levels = _levels(job)
    for stage in ("linkage", "agglomerate"):
        for level in range(levels):
            timed(stage, f"{stage} round {level + 1}/{levels}", _bound(round_task, job, stage, level),
                  _level_grid(job, level))
    timed("write", "write", _bound(write_task, job, output), grid)
    if fragments is not None:
        storage.create_volume(fragments, job.shape, np.dtype(np.uint64), job.chunk)
        timed("fragments", "fragments", _bound(fragments_task, job, fragments), grid)
    status.clear()
    linked, merged = _merges(job, "linkage"), _merges(job, "agglomerate")
    return _hierarchy(linked[0], linked[1], merged[0], merged[1], job.options.threshold)


def fragments_task(job: Job, fragments: str, index: tuple[int, int, int]) -> None:
    """A chunk's basins (with their global ids) into the `fragments` volume."""
    core = _core(job, index)
    volume = storage.open_volume(fragments, writable=True)
    volume.write(core, remap(_fragments(job, index), *_joined(job)).astype(np.uint64))
    volume.flush()


class _bound:
    """`function` with its leading arguments bound; picklable for worker processes."""

    def __init__(self, function: Callable[..., None], *args: Any) -> None:
        self.function, self.args = function, args

    def __call__(self, item: Any) -> None:
        self.function(*self.args, item)


@contextmanager
def local_mapper(workers: int) -> Iterator[Mapper]:
    """Run tasks here (one worker) or in `workers` forked processes (forked: a spawned one would
    import torch again, seconds per worker; the tasks use no OpenMP, see watershed.c)."""
    if workers <= 1:
        def here(function: Callable[..., None], items: list[Any]) -> Iterator[None]:
            for item in items:
                function(item)
                yield None

        yield here
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
        def forked(function: Callable[..., None], items: list[Any]) -> Iterator[None]:
            for future in as_completed([pool.submit(function, item) for item in items]):
                future.result()
                yield None

        yield forked


def dask_mapper(client: Any) -> Mapper:
    """Run tasks as Dask tasks of `client`'s cluster (the work folder must be shared with its workers)."""
    from distributed import as_completed as dask_completed

    def run(function: Callable[..., None], items: list[Any]) -> Iterator[None]:
        for future in dask_completed(client.map(function, items, pure=False)):
            future.result()
            yield None

    return run


def remove_work(job: Job) -> None:
    shutil.rmtree(job.work, ignore_errors=True)
