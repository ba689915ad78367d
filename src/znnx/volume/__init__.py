"""Whole-volume inference: `infer_volume` streams a volume on disk through a net, block by block."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from znnx.ir.graph import Graph
from znnx.net import Net, compile, model_shape  # noqa: A004
from znnx.volume.autopatch import choose_patch
from znnx.volume.runner import Summary, VolumeOptions, plan_blocks, run_volume
from znnx.volume.storage import open_volume

__all__ = ["Summary", "VolumeOptions", "infer_volume", "plan_blocks"]


def infer_volume(model: Graph | Net, input: str, output: str,  # noqa: A002
                 patch: Sequence[int] | str = "auto", options: VolumeOptions | None = None,
                 memory_bytes: int | None = None, device: str = "cpu", quiet: bool = False,
                 stream: TextIO | None = None) -> Summary:
    """Run `model` over the volume at `input`, write `output`; resumable (see `run_volume`).

    A `Graph` is compiled for `patch`, or with `patch="auto"` for the patch that runs this volume
    fastest within `memory_bytes` (default: half the free memory); a compiled `Net` runs as is."""
    options = options or VolumeOptions()
    notes = []
    if isinstance(model, Graph):
        if isinstance(patch, str):
            source = open_volume(input)
            rank = model.spatial_rank
            choice = choose_patch(model, tuple(source.shape[-rank:]), options, memory_bytes, device)
            notes.append("autopatch: " + choice.reason)
            patch = choice.patch
        model = compile(model, patch=patch, device=device)
    elif not isinstance(patch, str) and tuple(patch) != model_shape(model.graph, model.graph.types[
            model.graph.inputs[0]])[1:]:
        model = compile(model.graph, patch=patch, device=device)
    summary = run_volume(model, input, output, options, quiet=quiet, stream=stream)
    summary.notes[:0] = notes
    return summary
