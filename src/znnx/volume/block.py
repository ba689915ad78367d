"""Block geometry: where each block of a volume run reads its input and writes its output.

Pure functions of shapes; nothing here touches data. Coordinates are voxels of the volume, whose
output grid equals its input grid (the net's output stride is 1). A net is described per axis by
`Tiling`: its patch in and out, the offset of output voxel 0 inside the input patch, its
downsampling (a read box must start on that grid so pooling sees the windows the whole-volume run
sees) and, for padded nets, the margin of output voxels that the patch's own padding spoils.

- `exact` mode: write boxes tile the output with no overlap; each block's read box is placed so that
  every voxel it writes equals whole-volume inference. Valid nets read zeros outside the volume
  (the whole-volume run on the zero-padded volume); same-padded nets read inside the volume padded
  with zeros up to the next size the net accepts, so their own padding falls where the whole-volume
  run's does.
- `blend` mode: windows on a regular grid overlap by a chosen fraction; a block accumulates every
  window that meets its write box, weighted by `znnx.volume.blend` weights, and normalizes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from znnx.errors import InputError
from znnx.report import Geometry

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Box:
    """A half-open box [start, stop) per axis, in volume voxels; may reach outside the volume."""

    start: Shape
    stop: Shape

    @property
    def shape(self) -> Shape:
        return tuple(b - a for a, b in zip(self.start, self.stop))

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def slices(self, origin: Sequence[int] | None = None) -> tuple[slice, ...]:
        """Slices of this box in an array whose voxel 0 sits at `origin` (the volume's by default)."""
        origin = origin or (0,) * len(self.start)
        return tuple(slice(a - o, b - o) for a, b, o in zip(self.start, self.stop, origin))

    def intersect(self, other: Box) -> Box | None:
        start = tuple(max(a, b) for a, b in zip(self.start, other.start))
        stop = tuple(min(a, b) for a, b in zip(self.stop, other.stop))
        return Box(start, stop) if all(a < b for a, b in zip(start, stop)) else None


@dataclass(frozen=True)
class Block:
    """One unit of work: write `write` from the patches whose input boxes are `reads` (output
    boxes `outputs`, one per patch: one in exact mode, every overlapping window in blend mode)."""

    index: int
    write: Box
    reads: tuple[Box, ...]
    outputs: tuple[Box, ...]


@dataclass(frozen=True)
class Tiling:
    """What block geometry needs to know about a net compiled for one patch, per axis."""

    patch_in: Shape
    patch_out: Shape
    offset: Shape
    downsampling: Shape
    margin: Shape
    same: bool

    @property
    def step(self) -> Shape:
        """Write-box edge of exact mode: the exact part of a patch output, on the downsampling grid."""
        return tuple((q - 2 * m) // a * a for q, m, a in zip(self.patch_out, self.margin, self.downsampling))


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def tiling(geometry: Geometry) -> Tiling:
    """The tiling facts of a net from its geometry at one patch; refuses nets exact mode cannot tile."""
    if any(s != 1 for s in geometry.stride):
        raise InputError(f"volume: the net's output stride is {tuple(map(str, geometry.stride))}; blockwise "
                         f"inference needs an output on the input grid (stride 1 on every axis)")
    same = geometry.pads
    if same and any(o.denominator != 1 for o in geometry.offset):
        raise InputError(f"volume: output voxel 0 of this padded net sits at {tuple(map(str, geometry.offset))} in "
                         f"the input, between input voxels; exact tiling of a padded net needs whole-voxel offsets")
    offset = tuple(math.floor(o) for o in geometry.offset)  # a window of even size: the voxel before its centre
    if same and (any(offset) or geometry.input_spatial != geometry.output_spatial):
        raise InputError(f"volume: the net pads but its output {geometry.output_spatial} is not its input "
                         f"{geometry.input_spatial} (offset {offset}); exact tiling needs either a valid net (no "
                         f"padding) or a same-padded one; use mode='blend'")
    margin = (0,) * len(offset)
    if same:
        margin = tuple(_round_up((r + a + 1) // 2 - 1, a)
                       for r, a in zip(geometry.receptive_field, geometry.downsampling))
    return Tiling(geometry.input_spatial, geometry.output_spatial, offset, geometry.downsampling, margin, same)


def padded_extent(volume: Shape, t: Tiling) -> Shape:
    """Same-padded nets: the extent the whole-volume run works on (the volume padded with zeros at
    the end to a size the net accepts, at least one patch). Valid nets: the volume itself."""
    if not t.same:
        return volume
    return tuple(p + _round_up(max(v - p, 0), a) for v, p, a in zip(volume, t.patch_in, t.downsampling))


def _axis_exact(extent: int, roi: tuple[int, int], step: int, t: Tiling, axis: int) -> list[tuple[int, int, int]]:
    """(write start, write stop, patch-output start) along one axis."""
    q, m, a = t.patch_out[axis], t.margin[axis], t.downsampling[axis]
    last = _round_up(max(extent - q, 0), a)
    spans = []
    for k in range(roi[0] // step, -(-roi[1] // step)):
        begin = k * step - m
        if t.same:
            begin = min(max(begin, 0), last)
        spans.append((max(k * step, roi[0]), min((k + 1) * step, roi[1]), begin))
    return spans


def whole(volume: Shape) -> Box:
    return Box((0,) * len(volume), volume)


def exact_steps(volume: Shape, t: Tiling) -> Shape:
    """Write-box edges of exact mode per axis: `t.step`, or the whole axis where one patch covers it."""
    extent = padded_extent(volume, t)
    return tuple(v if t.same and e == p else s for v, e, p, s in zip(volume, extent, t.patch_in, t.step))


def exact_blocks(volume: Shape, t: Tiling, roi: Box | None = None) -> list[Block]:
    """Exact-mode blocks covering `roi` (the whole volume by default): write boxes are cells of a
    grid of edge `exact_steps` clipped to the roi, so output chunks of that edge have one writer."""
    roi = roi or whole(volume)
    steps = exact_steps(volume, t)
    for axis, (s, q) in enumerate(zip(steps, t.patch_out)):
        if s < 1:
            raise InputError(
                f"volume: a patch of {t.patch_in} gives no exact output along axis {axis}: the patch output "
                f"{q} minus twice the margin {t.margin[axis]} spoilt by the net's padding (receptive field, on "
                f"its downsampling grid {t.downsampling[axis]}) leaves nothing; use a patch larger than "
                f"{2 * t.margin[axis] + t.downsampling[axis]} or mode='blend'")
    axes = [_axis_exact(v, (a, b), s, t, i) for i, (v, a, b, s) in enumerate(zip(volume, roi.start, roi.stop, steps))]
    blocks = []
    for index, spans in enumerate(itertools.product(*axes)):
        out_start = tuple(b for _, _, b in spans)
        read_start = tuple(b - o for b, o in zip(out_start, t.offset))
        blocks.append(Block(
            index,
            Box(tuple(w0 for w0, _, _ in spans), tuple(w1 for _, w1, _ in spans)),
            (Box(read_start, tuple(r + p for r, p in zip(read_start, t.patch_in))),),
            (Box(out_start, tuple(b + q for b, q in zip(out_start, t.patch_out))),),
        ))
    return blocks


def window_starts(extent: int, window: int, overlap: float) -> list[int]:
    """Blend-mode window starts along one axis, as MONAI places them: every `window * (1 - overlap)`
    voxels, the last one moved back to end at the volume's end."""
    step = max(int(window * (1 - overlap)), 1)
    last = max(extent - window, 0)
    return sorted({min(i * step, last) for i in range(-(-last // step) + 1)})


def blend_blocks(volume: Shape, t: Tiling, overlap: Sequence[float], block: Shape,
                 roi: Box | None = None) -> list[Block]:
    """Blend-mode blocks: write boxes are cells of edge `block` clipped to `roi`; each lists every
    window (patch output box) that meets it, with the window's read box. Windows lie on one grid
    for the whole volume, so neighbouring blocks blend the same windows."""
    roi = roi or whole(volume)
    if any(not 0 <= o < 1 for o in overlap):
        raise InputError(f"volume: overlap must be in [0, 1) per axis, got {tuple(overlap)}")
    starts = [window_starts(max(v, q), q, o) for v, q, o in zip(volume, t.patch_out, overlap)]
    blocks = []
    cells = [range(a // b, -(-c // b)) for a, c, b in zip(roi.start, roi.stop, block)]
    for index, cell in enumerate(itertools.product(*cells)):
        write = Box(tuple(max(k * b, a) for k, b, a in zip(cell, block, roi.start)),
                    tuple(min((k + 1) * b, c) for k, b, c in zip(cell, block, roi.stop)))
        per_axis = [[s for s in axis_starts if s < w1 and s + q > w0]
                    for axis_starts, w0, w1, q in zip(starts, write.start, write.stop, t.patch_out)]
        outputs = tuple(Box(s, tuple(a + q for a, q in zip(s, t.patch_out))) for s in itertools.product(*per_axis))
        reads = tuple(Box(tuple(a - o for a, o in zip(out.start, t.offset)),
                          tuple(a - o + p for a, o, p in zip(out.start, t.offset, t.patch_in))) for out in outputs)
        blocks.append(Block(index, write, reads, outputs))
    return blocks
