"""The nets of a volume run, one per device: each compiled at its own (automatic) patch, helpers
checked or recompiled so that they compute the first device's blocks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from znnx.errors import InputError
from znnx.ir.graph import Graph
from znnx.net import Dense, Net, compile, dense_patch_graph, model_shape  # noqa: A004
from znnx.volume.autopatch import choose_patch, fit_patch
from znnx.volume.runner import VolumeOptions
from znnx.volume.storage import open_volume

if TYPE_CHECKING:
    from distributed import Client


@dataclass(frozen=True)
class Placement:
    """Where and how big a volume run's nets are: `patch` (a shape, or "auto": the fastest within
    `memory_bytes`, default `autopatch.default_budget` of each device), `device` (one, or several as
    "cuda,cpu"; default the Net's own, or the CPU for a Graph), `precision` (default the Net's own,
    or fp32), `threads` (each Dask worker's compute threads), `dense` (a Graph's dense form, as
    `compile` takes it; a Net runs the form it was compiled in)."""

    patch: tuple[int, ...] | str = "auto"
    memory_bytes: int | None = None
    device: str | None = None
    precision: str | None = None
    threads: int | None = None
    dense: Dense = False


def device_nets(model: Graph | Net, input: str | Any, output: str | Any, options: VolumeOptions,  # noqa: A002
                placement: Placement = Placement(),
                client: Client | None = None) -> tuple[Net, list[Net], list[str]]:
    """The nets `infer_volume` runs: the first device's, the helpers of the other devices (each able
    to compute the first one's blocks), and the notes on how they were chosen."""
    own = (model.device, model.precision.name) if isinstance(model, Net) else ("cpu", "fp32")
    devices = [d.strip() for d in (placement.device or own[0]).split(",")]
    precision = placement.precision or own[1]
    if len(devices) > 1 and client is not None:
        raise InputError(f"volume: several devices {devices} run on this machine's block queue, not on a Dask "
                         f"cluster; give one device with a cluster")
    notes: list[str] = []
    nets: list[Net] = []
    for d in devices:
        net = _net(model, input, output, placement, options, d, precision, client, notes)
        if any(net is other for other in nets):  # one thread per net: a net's buffers serve one call at a time
            net = compile(net.graph, patch=net.input_shape[1:], device=net.device, precision=net.precision.name)
        nets.append(net)
    primary, helpers = nets[0], nets[1:]
    if options.mode == "blend":
        helpers = [_same_patch(h, primary) for h in helpers]
    elif helpers:
        helpers = _compatible(helpers, primary, input, options, notes)
    return primary, helpers, notes


def _net(model: Graph | Net, input: str | Any, output: str | Any, placement: Placement,  # noqa: A002
         options: VolumeOptions, device: str, precision: str, client: Client | None, notes: list[str]) -> Net:
    """`model` compiled for `device`: a Graph (in its dense form where `placement.dense` asks) at the
    placement's patch or the automatic one, a Net as it is unless another patch, device or precision
    is asked for."""
    patch, memory_bytes = placement.patch, placement.memory_bytes
    if isinstance(model, Net):
        own = model_shape(model.graph, model.graph.types[model.graph.inputs[0]])[1:]
        wanted = own if isinstance(patch, str) else tuple(patch)
        if (wanted, device, precision) == (own, model.device, model.precision.name):
            return model
        return compile(model.graph, patch=wanted, device=device, precision=precision)
    shaping = dense_patch_graph(model, placement.dense)
    volume = tuple(open_volume(input).shape[-model.spatial_rank:])
    if isinstance(patch, str):
        if client is None:
            choice = choose_patch(shaping, volume, options, memory_bytes, device, precision=precision)
        else:
            from znnx.volume.dask_runner import choose_patch_on_worker

            choice = choose_patch_on_worker(client, shaping, volume, output, options, memory_bytes, placement.threads)
        notes.append(f"autopatch ({device}): " + choice.reason)
        patch = choice.patch
    else:
        patch, note = fit_patch(shaping, tuple(patch), volume, memory_bytes, device, precision)
        notes.extend([note] if note else [])
    net = compile(model, patch=patch, device=device, precision=precision, dense=placement.dense)
    if net.plan.dense is not None:
        notes.append(f"dense: {net.plan.dense.summary()}")
    return net


def _same_patch(helper: Net, primary: Net) -> Net:
    """`helper` at the primary's patch (blend mode tiles windows of one patch)."""
    if helper.input_shape == primary.input_shape:
        return helper
    return compile(helper.graph, patch=primary.input_shape[1:], device=helper.device,
                   precision=helper.precision.name)


def _compatible(helpers: Sequence[Net], primary: Net, input: str, options: VolumeOptions,  # noqa: A002
                notes: list[str]) -> list[Net]:
    """Exact mode: helpers that can compute the primary's blocks with their own patch; the others
    recompiled at the primary's patch (a same-padded net whose patch pads the volume differently)."""
    from znnx.report import geometry
    from znnx.volume.block import tiling
    from znnx.volume.runner import retiling

    layout = tiling(geometry(primary.graph))
    spatial = tuple(open_volume(input).shape[-primary.graph.spatial_rank:])
    fitted = []
    for helper in helpers:
        try:
            retiling(helper, layout, spatial, options.mode)
        except InputError:
            notes.append(f"hybrid: {helper.device} runs the patch of {primary.device}, "
                         f"{'x'.join(map(str, primary.input_shape[1:]))}: its own would pad the volume differently")
            helper = _same_patch(helper, primary)
        fitted.append(helper)
    return fitted
