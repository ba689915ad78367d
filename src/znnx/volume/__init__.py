"""Whole-volume inference: `infer_volume` streams a volume on disk through a net, block by block."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from znnx.ir.graph import Graph
from znnx.net import Net, compile, model_shape  # noqa: A004
from znnx.volume.autopatch import choose_patch
from znnx.volume.runner import Summary, VolumeOptions, plan_blocks, run_volume
from znnx.volume.storage import open_volume

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["Summary", "VolumeOptions", "infer_volume", "plan_blocks"]


def infer_volume(model: Graph | Net, input: str, output: str,  # noqa: A002
                 patch: Sequence[int] | str = "auto", options: VolumeOptions | None = None,
                 memory_bytes: int | None = None, device: str = "cpu", quiet: bool = False,
                 stream: TextIO | None = None, client: Client | None = None, threads: int | None = None) -> Summary:
    """Run `model` over the volume at `input`, write `output`; resumable (see `run_volume`).

    A `Graph` is compiled for `patch`, or with `patch="auto"` for the patch that runs this volume
    fastest within `memory_bytes` (default: half the free memory); a compiled `Net` runs as is.
    With a `dask.distributed.Client` the blocks run on its cluster (see `dask_runner`): the patch is
    then chosen on a worker, within the workers' memory limit, and `threads` sets each worker's
    compute threads."""
    options = options or VolumeOptions()
    notes = []
    if isinstance(model, Graph):
        if isinstance(patch, str):
            rank = model.spatial_rank
            volume = tuple(open_volume(input).shape[-rank:])
            if client is None:
                choice = choose_patch(model, volume, options, memory_bytes, device)
            else:
                from znnx.volume.dask_runner import choose_patch_on_worker

                choice = choose_patch_on_worker(client, model, volume, output, options, memory_bytes, threads)
            notes.append("autopatch: " + choice.reason)
            patch = choice.patch
        model = compile(model, patch=patch, device=device)
    elif not isinstance(patch, str) and tuple(patch) != model_shape(model.graph, model.graph.types[
            model.graph.inputs[0]])[1:]:
        model = compile(model.graph, patch=patch, device=device)
    if client is None:
        summary = run_volume(model, input, output, options, quiet=quiet, stream=stream)
    else:
        from znnx.volume.dask_runner import run_volume_dask

        summary = run_volume_dask(model, input, output, client, options, threads, quiet=quiet, stream=stream)
    summary.notes[:0] = notes
    return summary
