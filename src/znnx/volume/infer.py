"""`infer_volume`: stream a volume on disk through a net, block by block, on one or more devices or
a Dask cluster."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from znnx.errors import InputError
from znnx.ir.graph import Graph
from znnx.net import Dense, Net
from znnx.volume import storage
from znnx.volume.devices import Placement, device_nets
from znnx.volume.lock import writing
from znnx.volume.runner import Summary, VolumeOptions, run_volume

if TYPE_CHECKING:
    from distributed import Client


def run(model: Graph | Net, input: str | Any, output: str | Any, options: VolumeOptions,  # noqa: A002
        placement: Placement, client: Client | None = None, quiet: bool = False,
        stream: TextIO | None = None) -> Summary:
    """Run `model` over the volume at `input`, write `output`; resumable (see `run_volume`).

    `input` is a path (vol.zarr/raw, file.h5:/raw, ...) or an array (NumPy, zarr, Dask); `output` a
    path (created) or a preallocated writable array of shape (C_out, *spatial) (no ledger: an array
    in memory cannot be resumed).

    A `Graph` is compiled per `placement` (its patch, or the one that runs this volume fastest within
    its memory budget); a compiled `Net` runs as is unless the placement asks for another patch,
    device or precision. Several devices ("cuda,cpu") each get a net of their own and compute blocks
    from one queue, the first device's patch laying out the blocks. With a `dask.distributed.Client`
    the blocks run on its cluster (see `dask_runner`): the patch is then chosen on a worker, within
    the workers' memory limit, and `placement.threads` sets each worker's compute threads."""
    group = None
    if options.ome_zarr_levels and isinstance(output, str):
        from znnx.volume import ome

        group, output = output, ome.prepare(output)
    with writing(storage.as_location(output)):
        summary = _run_locked(model, input, output, options, placement, client, quiet, stream)
        if group is not None:
            from znnx.volume import ome

            ome.finish(group, options.ome_zarr_levels, (model.graph if isinstance(model, Net) else model).name)
            summary.notes.append(f"ome-zarr: {group} holds {options.ome_zarr_levels} level(s) with multiscales "
                                 f"metadata")
    return summary


def _run_locked(model: Graph | Net, input: str | Any, output: str | Any, options: VolumeOptions,  # noqa: A002
                placement: Placement, client: Client | None, quiet: bool, stream: TextIO | None) -> Summary:
    """`run`'s work once the output is locked: the nets, then the blocks here or on the cluster."""
    primary, helpers, notes = device_nets(model, input, output, options, placement, client)
    if client is None:
        summary = run_volume(primary, input, output, options, quiet=quiet, stream=stream, helpers=helpers)
    else:
        from znnx.volume.dask_runner import run_volume_dask

        summary = run_volume_dask(primary, input, output, client, options, placement.threads, quiet=quiet,
                                  stream=stream)
    summary.notes[:0] = notes
    return summary


def infer_volume(model: Graph | Net, input: str | Any, output: str | Any,  # noqa: A002
                 patch: Sequence[int] | str = "auto", options: VolumeOptions | None = None,
                 memory_bytes: int | None = None, device: str | None = None, quiet: bool = False,
                 stream: TextIO | None = None, client: Client | None = None, threads: int | None = None,
                 precision: str | None = None, dense: Dense = False) -> Summary:
    """`run` with the placement spelled as keywords: `patch` ("auto" or a shape), `memory_bytes`
    (default: 80% of the free RAM on the CPU, half the free memory of a GPU), `device` ("cpu", "cuda",
    "cuda,cpu"; default the Net's own, or the CPU), `precision`, `threads` (each Dask worker's), `dense` (a Graph's
    dense form, as `compile` takes it: the output at every voxel for a net that pools)."""
    if threads is not None and threads < 1:
        raise InputError(f"volume: threads must be at least 1, got {threads}")
    placement = Placement(patch if isinstance(patch, str) else tuple(patch), memory_bytes, device, precision, threads,
                          dense)
    return run(model, input, output, options or VolumeOptions(), placement, client, quiet, stream)
