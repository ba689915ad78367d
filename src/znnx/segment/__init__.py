"""From affinities to segments: watershed basins, size-dependent single linkage and agglomeration,
in memory or chunk by chunk (locally or on Dask) with exactly the same result."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from znnx.errors import InputError
from znnx.segment.hierarchy import Hierarchy
from znnx.segment.metrics import adapted_rand_error, variation_of_information
from znnx.segment.pipeline import (
    Job,
    SegmentOptions,
    dask_mapper,
    local_mapper,
    read_affinities,
    remove_work,
    run_chunked,
    segment_array,
    spatial_shape,
)
from znnx.volume import storage
from znnx.volume.lock import writing
from znnx.volume.progress import peak_rss_bytes

__all__ = ["Hierarchy", "SegmentOptions", "SegmentSummary", "adapted_rand_error", "segment", "segment_array",
           "variation_of_information"]


@dataclass(frozen=True)
class SegmentSummary:
    """A finished segmentation: shape, wall seconds, voxels/s, merges, peak RSS (this process)."""

    shape: tuple[int, int, int]
    seconds: float
    merges: int
    peak_rss_bytes: int
    steps: dict[str, float]

    @property
    def voxels_per_s(self) -> float:
        return float(np.prod(self.shape)) / max(self.seconds, 1e-9)


def work_path(output: storage.Location) -> Path:
    """Where a chunked segmentation keeps its per-round files: beside the output, like the ledger."""
    return storage.ledger_path(output).with_suffix(".znnx-segment")


def segment(affinities: str | Any, output: str, options: SegmentOptions | None = None,
            chunk: Sequence[int] | None = None, cluster: str | None = None, workers: int = 1,
            hierarchy: str | None = None, fragments: str | None = None) -> SegmentSummary:
    """Segment an affinity volume (3, D, H, W) or boundary map in any format znnx reads into a
    uint64 label volume at `output`; the merge hierarchy goes to `hierarchy` (.npz) and the
    watershed basins to `fragments` if given. Without `chunk` the volume is segmented in memory;
    with it, chunk by chunk in `workers` local processes or on the Dask `cluster` (`local:N` or a
    scheduler address), resuming the work a killed run left."""
    options = options or SegmentOptions()
    options.check()
    began = time.perf_counter()
    source = storage.open_volume(affinities)
    shape = spatial_shape(source)
    location = storage.as_location(output)
    steps: dict[str, float] = {}
    with writing(location):
        if chunk is None:
            aff = read_affinities(source, tuple(slice(0, n) for n in shape))
            labels, tree, basins = segment_array(aff, options)
            _write(output, labels, shape)
            if fragments is not None:
                _write(fragments, basins, shape)
        else:
            if len(chunk) != 3 or min(chunk) < 1:
                raise InputError(f"segment: chunk must be three positive sizes D,H,W, got {tuple(chunk)}")
            job = Job(str(source.location), str(work_path(location)), shape, tuple(int(c) for c in chunk),  # type: ignore[arg-type]
                      options)
            tree = _chunked(job, output, cluster, workers, fragments, steps)
            remove_work(job)
    if hierarchy is not None:
        tree.save(hierarchy)
    return SegmentSummary(shape, time.perf_counter() - began, len(tree.a), peak_rss_bytes(), steps)


def _chunked(job: Job, output: str, cluster: str | None, workers: int, fragments: str | None,
             steps: dict[str, float]) -> Hierarchy:
    if cluster is None:
        with local_mapper(workers) as mapper:
            return run_chunked(job, output, mapper, fragments, steps)
    from znnx.volume.dask_runner import connect

    with connect(cluster) as client:
        return run_chunked(job, output, dask_mapper(client), fragments, steps)


def _write(output: str, labels: np.ndarray, shape: tuple[int, ...]) -> None:
    volume = storage.create_volume(output, shape, np.dtype(np.uint64), tuple(min(64, n) for n in shape))
    volume.write(tuple(slice(0, n) for n in shape), labels)
    volume.flush()
