"""Run a compiled net over a whole volume on disk, block by block, resumably.

Reading (a thread pool, prefetching), computing (the caller's thread, the net's own threads) and
writing (one thread, write-behind) overlap, so storage does not stall the net. A block's output is
written, flushed, and only then recorded in the ledger; rerunning the same call after a crash
computes only the blocks the ledger does not list.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from znnx.errors import InputError, StorageError
from znnx.kernels import convert
from znnx.report import geometry
from znnx.units import human_bytes
from znnx.volume import storage
from znnx.volume.blend import WEIGHTINGS, blend, window_weights
from znnx.volume.block import Block, Box, Tiling, blend_blocks, exact_blocks, exact_steps, tiling, whole
from znnx.volume.ledger import Ledger, run_key
from znnx.volume.lock import writing
from znnx.volume.progress import Progress, peak_rss_bytes

if TYPE_CHECKING:
    from znnx.ir.graph import Graph
    from znnx.net import Net

MODES = ("exact", "blend")
OUTPUT_DTYPES = ("float32", "float16", "uint8")
CHUNK_EDGE = 128


@dataclass(frozen=True)
class VolumeOptions:
    """How to run a volume. Normalization is explicit: the net sees (x * scale - mean) / std.

    `roi` limits the run to a box of the volume (the output keeps the volume's shape; the rest stays
    zero); `mask` (same spatial shape, nonzero = wanted) and `background` (an input value) skip
    blocks that hold nothing wanted. `overlap` and `weighting` apply to `blend` mode. Inputs other
    than uint8, uint16 and floating point are refused unless `convert_input` asks for them to be
    converted to float32. `ome_zarr_levels` > 0 writes the output as an OME-Zarr group (the output
    names the group) with that many resolution levels (volume/ome.py)."""

    mode: str = "exact"
    overlap: tuple[float, ...] = (0.25, 0.25, 0.25)
    weighting: str = "gaussian"
    roi: Box | None = None
    scale: float = 1.0
    mean: float = 0.0
    std: float = 1.0
    output_dtype: str = "float32"
    mask: str | None = None
    background: float | None = None
    overwrite: bool = False
    prefetch: int = 2
    convert_input: bool = False
    ome_zarr_levels: int = 0


@dataclass
class Summary:
    """What a run did; `to_json` for the CLI. Seconds are wall time of this invocation; `retried`
    counts blocks whose computation started more than once (a Dask worker was lost while on them),
    `workers` the processes (or, in a hybrid run, the devices) that computed blocks, `devices` what
    each device of a hybrid run did, `nonfinite_input_voxels` the input voxels (of the blocks this
    invocation computed) holding NaN or Inf, which propagate into the output as in PyTorch."""

    input: str
    output: str
    mode: str
    patch: tuple[int, ...]
    blocks: int
    computed: int
    skipped: int
    resumed: int
    patches: int
    voxels: int
    seconds: float
    voxels_per_s: float
    compute_seconds: float
    read_wait_seconds: float
    write_wait_seconds: float
    peak_rss_mib: float
    ledger: str
    retried: int = 0
    workers: int = 1
    notes: list[str] = field(default_factory=list)
    devices: list[dict[str, Any]] = field(default_factory=list)
    nonfinite_input_voxels: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _chunk_edge(step: int) -> int:
    """The largest divisor of `step` that is at most CHUNK_EDGE (so every write covers whole chunks)."""
    return max(d for d in range(1, min(step, CHUNK_EDGE) + 1) if step % d == 0)


def _spatial(volume: storage.Volume, channels: int, rank: int) -> tuple[int, ...]:
    shape = volume.shape
    if len(shape) == rank and channels == 1:
        return shape
    if len(shape) == rank + 1 and shape[0] == channels:
        return shape[1:]
    raise InputError(f"volume: {volume.location} has shape {shape}; this net takes {channels} channel(s) of "
                     f"{rank}D data, so the volume must be {'(D, H, W) or ' if channels == 1 else ''}"
                     f"({channels}, D, H, W), channel first")


def minimum_volume(net: Net) -> tuple[int, ...]:
    """The smallest volume the net can cover along each axis: the smallest output it computes (the
    other axes at its compiled patch). Valid nets read their context as zeros beyond the volume."""
    from znnx.net import accepted_size

    own, out = net.input_shape[1:], net.output_shape[1:]
    smallest = [accepted_size(net.graph, axis, range(1, own[axis] + 1), own) for axis in range(len(own))]
    return tuple(s - (p - q) for s, p, q in zip(smallest, own, out))  # type: ignore[operator]


class _Reader:
    """Reads a box of the (channel-first) input, zero outside the volume, normalized to float32."""

    def __init__(self, volume: storage.Volume, spatial: tuple[int, ...], options: VolumeOptions) -> None:
        self.volume, self.spatial, self.options = volume, spatial, options
        self.channel_axis = len(volume.shape) > len(spatial)

    def raw(self, box: Box) -> np.ndarray | None:
        inner = box.intersect(whole(self.spatial))
        if inner is None:
            return None
        index = inner.slices()
        data = self.volume.read((slice(None), *index) if self.channel_axis else index)
        return data if self.channel_axis else data[None]

    def patch(self, box: Box, raw: np.ndarray | None, channels: int) -> np.ndarray:
        """The normalized float32 patch: converted and scaled in one pass into its place, zeros
        only where the box reaches past the volume."""
        o = self.options
        inner = box.intersect(whole(self.spatial))
        if raw is None or inner is None:
            return np.zeros((channels, *box.shape), np.float32)
        out = (np.empty if inner == box else np.zeros)((channels, *box.shape), np.float32)
        target = out[(slice(None), *inner.slices(box.start))]
        np.multiply(raw, np.float32(o.scale), out=target, dtype=np.float32, casting="unsafe")
        if o.mean != 0.0 or o.std != 1.0:
            target -= np.float32(o.mean)
            target /= np.float32(o.std)
        return out


def _to_output(values: np.ndarray, dtype: str) -> np.ndarray:
    """The block's float32 values (owned, overwritten) in the output dtype; uint8 maps [0, 1] to 0..255."""
    if dtype == "uint8":
        return convert.to_uint8(values)
    return values.astype(dtype, copy=False)


def _check_options(options: VolumeOptions, rank: int) -> None:
    if options.mode not in MODES:
        raise InputError(f"volume: mode must be one of {MODES}, got {options.mode!r}")
    if options.output_dtype not in OUTPUT_DTYPES:
        raise InputError(f"volume: output dtype must be one of {OUTPUT_DTYPES}, got {options.output_dtype!r}")
    if options.weighting not in WEIGHTINGS:
        raise InputError(f"volume: weighting must be one of {WEIGHTINGS}, got {options.weighting!r}")
    if len(options.overlap) != rank:
        raise InputError(f"volume: overlap needs {rank} values (one per axis), got {options.overlap}")
    if options.std == 0:
        raise InputError("volume: std must not be zero")


def _blend_block_edge(patch_out: int, extent: int) -> tuple[int, int]:
    """(chunk edge, block edge) of blend mode: chunks of at most CHUNK_EDGE, blocks about two windows."""
    chunk = min(CHUNK_EDGE, extent, patch_out)
    block = chunk * max(1, math.ceil(min(2 * patch_out, extent) / chunk))
    return chunk, block


def plan_blocks(graph: Graph, spatial: tuple[int, ...],
                options: VolumeOptions) -> tuple[Tiling, list[Block], tuple[int, ...]]:
    """The tiling of a net (its graph shaped for one patch), the blocks of the run and the output's
    chunk edges."""
    geo = geometry(graph)
    roi = options.roi
    if roi is not None and (len(roi.start) != len(spatial) or any(a < 0 or b > v or a >= b for a, b, v in
                                                                   zip(roi.start, roi.stop, spatial))):
        raise InputError(f"volume: roi {roi.start}..{roi.stop} is not a non-empty box inside the volume {spatial}")
    if options.mode == "exact":
        t = tiling(geo)
        blocks = exact_blocks(spatial, t, roi)
        return t, blocks, tuple(_chunk_edge(s) for s in exact_steps(spatial, t))
    t = Tiling(geo.input_spatial, geo.output_spatial,
               tuple(math.floor(o) for o in geo.offset), (1,) * len(spatial), (0,) * len(spatial), geo.pads)
    edges = [_blend_block_edge(q, v) for q, v in zip(t.patch_out, spatial)]
    blocks = blend_blocks(spatial, t, options.overlap, tuple(b for _, b in edges), roi)
    return t, blocks, tuple(c for c, _ in edges)


def _open_mask(spec: str, spatial: tuple[int, ...]) -> storage.Volume:
    mask = storage.open_volume(spec)
    if mask.shape != spatial:
        raise InputError(f"volume: mask {spec} has shape {mask.shape} but the input volume is {spatial}; the mask "
                         f"must have the input's spatial shape (nonzero = compute)")
    return mask


def _check_space(location: storage.Location, shape: tuple[int, ...], dtype: str) -> None:
    """Uncompressed formats: refuse up front an output larger than the free space."""
    if storage.format_of(location).compressed:
        return
    need = math.prod(shape) * np.dtype(dtype).itemsize
    free = storage.free_bytes(location)
    if need > free:
        raise StorageError(f"volume: output {location} needs {human_bytes(need)} but its file system has "
                           f"{human_bytes(free)} free; free space or write a compressed zarr")


def _open_ledger(path: Path, description: dict[str, Any], blocks: int) -> Ledger:
    try:
        return Ledger.open(path, run_key(description), description, blocks)
    except OSError as error:
        raise StorageError(f"volume: cannot write the resume ledger {path}: {error}; choose a writable "
                           f"output location") from None


def _open_output(location: storage.Location, shape: tuple[int, ...], dtype: str, chunks: tuple[int, ...],
                 description: dict[str, Any], blocks: int, overwrite: bool) -> tuple[storage.Volume, Ledger]:
    """A fresh output and ledger, or (same run, unfinished) the existing ones to resume; an array
    in memory as it is, with a ledger kept nowhere."""
    if location.kind == "array":
        output = storage.open_volume(location, writable=True)
        if output.shape != shape:
            raise InputError(f"volume: the output array has shape {output.shape}, but this run writes {shape} "
                             f"(C_out, *spatial); allocate it as np.zeros({shape}, np.{dtype})")
        return output, Ledger.in_memory()
    ledger_file = storage.ledger_path(location)
    present = storage.exists(location)
    if present and not overwrite:
        if not ledger_file.exists():
            raise StorageError(f"volume: output {location} already exists and has no znnx ledger ({ledger_file}), "
                               f"so znnx cannot tell what in it is finished; pass --overwrite to replace it, or "
                               f"choose another output")
        ledger = _open_ledger(ledger_file, description, blocks)
        output = storage.open_volume(location, writable=True)
        if output.shape != shape or output.dtype != np.dtype(dtype):
            ledger.close()
            raise StorageError(f"volume: output {location} is {output.shape} {output.dtype}, but this run writes "
                               f"{shape} {dtype}; pass --overwrite to replace it")
        return output, ledger
    _check_space(location, shape, dtype)
    output = storage.create_volume(location, shape, dtype, chunks)
    ledger_file.unlink(missing_ok=True)
    return output, _open_ledger(ledger_file, description, blocks)


@dataclass(frozen=True)
class Run:
    """One volume run as decided up front by the process that owns the ledger: what is read, the
    blocks, the output's shape and chunks, and the description the ledger's key hashes."""

    input: storage.Location
    output: storage.Location
    spatial: tuple[int, ...]
    tiling: Tiling
    blocks: tuple[Block, ...]
    output_shape: tuple[int, ...]
    chunks: tuple[int, ...]
    description: dict[str, Any]


def plan_run(net: Net, input: str | Any, output: str | Any, options: VolumeOptions) -> Run:  # noqa: A002
    """Check the input and options against the net and lay out the run's blocks (nothing written)."""
    from znnx.plan.network_file import fingerprint

    rank = net.graph.spatial_rank
    _check_options(options, rank)
    source = storage.open_volume(input)
    channels = net.input_shape[0]
    spatial = _spatial(source, channels, rank)
    if source.dtype.kind != "f" and source.dtype not in (np.uint8, np.uint16) and not options.convert_input:
        raise InputError(f"volume: {input} has dtype {source.dtype}; znnx reads uint8, uint16 and floating point "
                         f"images (a {source.dtype} volume is more often labels or a mask than an image); if it is "
                         f"an image, ask for the conversion to float32 (--convert-input, "
                         f"VolumeOptions(convert_input=True)) and set --scale to its range")
    smallest = minimum_volume(net)
    if any(v < m for v, m in zip(spatial, smallest)):
        raise InputError(f"volume: {input} is {spatial}, smaller than the smallest output this net computes "
                         f"{smallest}; the net cannot cover it; use a larger volume or a net for smaller data")
    if options.mask:
        _open_mask(options.mask, spatial)
    t, blocks, chunk = plan_blocks(net.graph, spatial, options)
    description = {
        "model": fingerprint(net.graph), "input": str(source.location), "input_shape": source.shape,
        "input_dtype": str(source.dtype), "normalize": [options.scale, options.mean, options.std],
        "mode": options.mode, "patch": t.patch_in, "roi": options.roi, "output_dtype": options.output_dtype,
        "mask": options.mask, "background": options.background, "blocks": len(blocks),
        **({"overlap": options.overlap, "weighting": options.weighting} if options.mode == "blend" else {}),
    }
    out_channels = net.output_shape[0]
    return Run(source.location, storage.as_location(output), spatial, t, tuple(blocks), (out_channels, *spatial),
               (out_channels, *chunk), description)


def open_output(run: Run, options: VolumeOptions) -> tuple[storage.Volume, Ledger]:
    """The run's output and ledger: fresh, or (same run, unfinished) the existing ones to resume."""
    return _open_output(run.output, run.output_shape, options.output_dtype, run.chunks, run.description,
                        len(run.blocks), options.overwrite)


def retiling(net: Net, layout: Tiling, spatial: tuple[int, ...], mode: str) -> Tiling | None:
    """How `net` computes blocks laid out by `layout` (another net of the same model, over a volume
    of `spatial`): as they are (None: same patch), or exact mode only, as the cells of its own exact
    tiling inside each block's write box, which needs the same padded extent (same-padded nets pad
    the volume up to a size their patch accepts, and the result depends on it)."""
    from znnx.volume.block import padded_extent

    if tuple(net.input_shape[1:]) == layout.patch_in:
        return None
    own = tiling(geometry(net.graph)) if mode == "exact" else None
    if own is None or padded_extent(spatial, own) != padded_extent(spatial, layout):
        why = "blend mode tiles windows of one patch" if mode != "exact" else "it pads the volume to another extent"
        raise InputError(f"volume: a helper net of patch {tuple(net.input_shape[1:])} cannot compute blocks laid out "
                         f"for patch {layout.patch_in} ({why}); compile every device's net for the same patch")
    return own


class BlockJob:
    """Reads, computes and writes single blocks of a run; one per process (the local runner's, or a
    Dask worker's) and per device in a hybrid run. `compute` runs on one thread at a time; `load`
    and `store` may run on others. With `retile`, the net has its own patch and computes a block as
    the cells of its exact tiling inside the block's write box (`retiling`)."""

    def __init__(self, net: Net, input: str | storage.Location, output: str | storage.Volume,  # noqa: A002
                 spatial: tuple[int, ...], options: VolumeOptions, retile: Tiling | None = None) -> None:
        self.net, self.options, self.retile = net, options, retile
        self.channels, self.out_channels = net.input_shape[0], net.output_shape[0]
        self.reader = _Reader(storage.open_volume(input), spatial, options)
        self.mask = _open_mask(options.mask, spatial) if options.mask else None
        self.sink = storage.open_volume(output, writable=True) if isinstance(output, str) else output
        self.weights = window_weights(options.weighting, net.output_shape[1:]) if options.mode == "blend" else None
        self.compute_seconds = self.read_wait_seconds = self.write_wait_seconds = 0.0
        self.patches = self.blocks = self.skipped = self.nonfinite = self.computed = 0

    def parts(self, block: Block) -> list[Block]:
        """The blocks this job's net computes `block` as: itself, or its own tiling's cells inside it."""
        return [block] if self.retile is None else exact_blocks(self.reader.spatial, self.retile, block.write)

    def load(self, block: Block) -> list[np.ndarray] | None:
        """The block's normalized input patches, or None if the mask or the background skips it
        (judged on the block's own read boxes, so every job skips the same blocks)."""
        options = self.options
        if self.mask is not None and not self.mask.read(block.write.slices()).any():
            return None
        raws: list[np.ndarray | None] | None = None
        if options.background is not None:
            raws = [self.reader.raw(box) for box in block.reads]
            if all(r is None or (r == options.background).all() for r in raws):
                return None
        boxes = [box for part in self.parts(block) for box in part.reads]
        if raws is None or self.retile is not None:
            raws = [self.reader.raw(box) for box in boxes]
        return [self.reader.patch(box, raw, self.channels) for box, raw in zip(boxes, raws)]

    def seconds_per_block(self) -> float | None:
        """Compute seconds per computed block so far (None before the first)."""
        return self.compute_seconds / self.computed if self.computed else None

    def count_nonfinite(self, block: Block, patches: list[np.ndarray]) -> int:
        """Input voxels of the block's write box holding NaN or Inf in any channel (each counted
        once, however many of the block's patches read it)."""
        if self.reader.volume.dtype.kind != "f" or all(np.isfinite(patch.sum()) for patch in patches):
            return 0
        boxes = [box for part in self.parts(block) for box in part.reads]
        hit = np.zeros(block.write.shape, bool)
        for box, patch in zip(boxes, patches):
            inner = box.intersect(block.write)
            if inner is not None:
                bad = ~np.isfinite(patch[(slice(None), *inner.slices(box.start))]).all(axis=0)
                hit[inner.slices(block.write.start)] |= bad
        return int(hit.sum())

    def compute(self, block: Block, patches: list[np.ndarray]) -> np.ndarray:
        """The block's output over its write box (C_out, *write shape), in the output dtype (converted
        here, on the compute thread, which leaves the single writer thread only the encoding)."""
        began = time.perf_counter()
        if self.weights is not None:
            result = blend(block.write, block.outputs, (self.net(patch) for patch in patches), self.weights)
        elif self.retile is None:
            result = self.net(patches[0])[(slice(None), *block.write.slices(block.outputs[0].start))]
        else:
            result = np.empty((self.out_channels, *block.write.shape), np.float32)
            for part, patch in zip(self.parts(block), patches):
                result[(slice(None), *part.write.slices(block.write.start))] = self.net(patch)[
                    (slice(None), *part.write.slices(part.outputs[0].start))]
        values = _to_output(result, self.options.output_dtype)
        self.compute_seconds += time.perf_counter() - began
        self.computed += 1
        self.patches += len(patches)
        return values

    def store(self, block: Block, values: np.ndarray | None) -> None:
        """Write the block's output (zeros for a skipped block) and flush it; the caller then records it."""
        if values is None:
            values = np.zeros((self.out_channels, *block.write.shape), self.options.output_dtype)
        self.sink.write((slice(None), *block.write.slices()), values)
        self.sink.flush()


def summarize(run: Run, todo: Sequence[Block], seconds: float, computed: int, skipped: int, patches: int,
              compute_seconds: float, waits: tuple[float, float], options: VolumeOptions, retried: int = 0,
              workers: int = 1) -> Summary:
    """The run's summary; `todo` are the blocks this invocation had to do (the rest were resumed)."""
    t = run.tiling
    work = sum(b.write.size for b in todo)
    notes = [] if t.patch_in == t.patch_out or options.mode == "blend" else [
        f"valid net: each patch of {t.patch_in} computes {t.patch_out}; exact mode writes "
        f"{exact_steps(run.spatial, t)} of it (whole multiples of the net's downsampling {t.downsampling})"]
    return Summary(
        str(run.input), str(run.output), options.mode, t.patch_in, len(run.blocks), computed, skipped,
        len(run.blocks) - len(todo), patches, work, seconds, work / max(seconds, 1e-9), compute_seconds,
        waits[0], waits[1], peak_rss_bytes() / 2**20,
        "" if run.output.kind == "array" else str(storage.ledger_path(run.output)), retried, workers, notes)


def new_progress(run: Run, todo: Sequence[Block], options: VolumeOptions, quiet: bool,
                 stream: TextIO | None) -> Progress:
    roi_voxels = (options.roi or whole(run.spatial)).size
    return Progress(len(run.blocks), roi_voxels, len(run.blocks) - len(todo),
                    roi_voxels - sum(b.write.size for b in todo), stream=stream, quiet=quiet)


class _Queue:
    """The blocks left to do, handed out one at a time to whichever worker asks first.

    With several workers (a hybrid run), a slow one stops taking blocks near the end: a worker that
    has timed at least one block declines the next when the others, at their measured rates, would
    finish every block still queued (at least one block's time of the fastest) before it finished
    that one; the fastest worker never declines. So the fast device is never left
    waiting for a slow one's last block (ZNNi's CPU+GPU runs split the work the same way)."""

    def __init__(self, blocks: Sequence[Block]) -> None:
        self._blocks = deque(blocks)
        self._lock = threading.Lock()
        self.stopped = False
        self.jobs: list[BlockJob] = []

    def take(self, job: BlockJob | None = None) -> Block | None:
        with self._lock:
            if self.stopped or not self._blocks or (job is not None and self._declines(job)):
                return None
            return self._blocks.popleft()

    def _declines(self, job: BlockJob) -> bool:
        own = job.seconds_per_block()
        others = [j.seconds_per_block() for j in self.jobs if j is not job]
        if own is None or not others or None in others:
            return False
        times = [s for s in others if s is not None]
        return own > max(len(self._blocks) * 1 / sum(1 / s for s in times), min(times))


def _work(job: BlockJob, queue: _Queue, reads: ThreadPoolExecutor, writes: ThreadPoolExecutor, prefetch: int,
          store: Callable[[BlockJob, Block, np.ndarray | None], None]) -> None:
    """One worker's loop: keep `prefetch` loads in flight, compute on this thread, hand results to
    the writer (at most two waiting, so a slow disk slows the worker instead of filling memory)."""
    pending: deque[tuple[Block, Future]] = deque()
    written: deque[Future] = deque()

    def submit_read() -> None:
        block = queue.take(job)
        if block is not None:
            pending.append((block, reads.submit(job.load, block)))

    try:
        for _ in range(max(prefetch, 1)):
            submit_read()
        while pending:
            block, loaded = pending.popleft()
            submit_read()
            began = time.perf_counter()
            patches = loaded.result()
            job.read_wait_seconds += time.perf_counter() - began
            job.skipped += patches is None
            job.blocks += 1
            job.nonfinite += 0 if patches is None else job.count_nonfinite(block, patches)
            written.append(writes.submit(store, job, block, None if patches is None else job.compute(block, patches)))
            began = time.perf_counter()
            while len(written) > 2 or (written and written[0].done()):
                written.popleft().result()
            job.write_wait_seconds += time.perf_counter() - began
        began = time.perf_counter()
        for future in written:
            future.result()
        job.write_wait_seconds += time.perf_counter() - began
    except BaseException:
        queue.stopped = True
        raise


def run_volume(net: Net, input: str | Any, output: str | Any, options: VolumeOptions | None = None,  # noqa: A002
               quiet: bool = False, stream: TextIO | None = None,
               on_block: Callable[[Block], None] | None = None, helpers: Sequence[Net] = ()) -> Summary:
    """Run `net` over the volume at `input` and write the result to `output` (see `VolumeOptions`).

    The output is (C_out, D, H, W), chunked so that each block writes whole chunks; a ledger beside
    it makes the call resumable. `on_block` is called after each block is recorded (tests use it).
    `helpers` are more nets of the same model (another device, its own patch: `retiling`): each
    takes blocks from the same queue on its own thread while `net` computes on the caller's, so
    their throughputs add up (the hybrid CPU + GPU run)."""
    options = options or VolumeOptions()
    start = time.perf_counter()
    run = plan_run(net, input, output, options)
    retiles = [retiling(helper, run.tiling, run.spatial, options.mode) for helper in helpers]
    with writing(run.output) as notes:
        summary = _run_blocks(net, run, options, start, quiet, stream, on_block, helpers, retiles)
    summary.notes.extend(notes)
    return summary


def _run_blocks(net: Net, run: Run, options: VolumeOptions, start: float, quiet: bool, stream: TextIO | None,
                on_block: Callable[[Block], None] | None, helpers: Sequence[Net],
                retiles: Sequence[Tiling | None]) -> Summary:
    """`run_volume`'s work once the output is locked."""
    sink, ledger = open_output(run, options)
    jobs = [BlockJob(net, run.input, sink, run.spatial, options),
            *(BlockJob(h, run.input, sink, run.spatial, options, r) for h, r in zip(helpers, retiles))]
    todo = [b for b in run.blocks if b.index not in ledger.done]
    progress = new_progress(run, todo, options, quiet, stream)
    failed: list[BaseException] = []
    queue = _Queue(todo)
    queue.jobs = jobs

    def store(job: BlockJob, block: Block, result: np.ndarray | None) -> None:
        if failed:  # after a failed write, queued blocks are left for the rerun
            return
        try:
            job.store(block, result)
        except BaseException as error:
            failed.append(error)
            raise
        ledger.finish(block.index)
        progress.advance(block.write.size)
        if on_block is not None:
            on_block(block)

    progress.show()
    try:
        with ThreadPoolExecutor(2 * len(jobs), "znnx-read") as reads, ThreadPoolExecutor(1, "znnx-write") as writes, \
                ThreadPoolExecutor(max(len(helpers), 1), "znnx-helper") as helping:
            others = [helping.submit(_work, job, queue, reads, writes, 1, store) for job in jobs[1:]]
            try:
                _work(jobs[0], queue, reads, writes, options.prefetch, store)
            finally:
                for future in others:
                    future.exception()
            for future in others:
                future.result()
    finally:
        queue.stopped = True
        ledger.close()
        progress.close()
    summary = summarize(run, todo, time.perf_counter() - start, len(todo) - sum(j.skipped for j in jobs),
                        sum(j.skipped for j in jobs), sum(j.patches for j in jobs),
                        sum(j.compute_seconds for j in jobs),
                        (sum(j.read_wait_seconds for j in jobs), sum(j.write_wait_seconds for j in jobs)), options,
                        workers=len(jobs))
    summary.nonfinite_input_voxels = sum(j.nonfinite for j in jobs)
    if helpers:
        summary.devices = [{"device": str(j.net.device), "precision": j.net.precision.name,
                            "patch": list(j.net.input_shape[1:]), "blocks": j.blocks,
                            "compute_seconds": j.compute_seconds} for j in jobs]
        summary.notes.append("hybrid: " + ", ".join(
            f"{d['device']} ({d['precision']}, patch {'x'.join(map(str, d['patch']))}) {d['blocks']} block(s) in "
            f"{d['compute_seconds']:.1f} s of compute" for d in summary.devices))
    return summary


def parse_roi(text: str, spatial_rank: int) -> Box:
    """`z0:z1,y0:y1,x0:x1` -> Box."""
    try:
        pairs = [tuple(int(v) for v in part.split(":")) for part in text.split(",")]
        if len(pairs) != spatial_rank or any(len(p) != 2 for p in pairs):
            raise ValueError
    except ValueError:
        raise InputError(f"volume: roi {text!r} must be {spatial_rank} ranges start:stop separated by commas, "
                         f"e.g. 0:64,0:128,0:128") from None
    return Box(tuple(a for a, _ in pairs), tuple(b for _, b in pairs))


def overlaps(values: Sequence[float], rank: int) -> tuple[float, ...]:
    """One overlap fraction per axis from one value or one per axis."""
    if len(values) == 1:
        return (float(values[0]),) * rank
    return tuple(float(v) for v in values)
