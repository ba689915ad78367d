"""A progress line for volume runs: blocks, voxels/s, ETA and peak memory, redrawn in place on a
terminal and printed every few seconds elsewhere (logs of batch jobs)."""

from __future__ import annotations

import resource
import sys
import time
from typing import TextIO

from znnx.units import human_bytes


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _rate(voxels_per_s: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if voxels_per_s >= scale:
            return f"{voxels_per_s / scale:.2f} {unit}vox/s"
    return f"{voxels_per_s:.0f} vox/s"


class Progress:
    """Counts finished blocks and output voxels; `voxels/s` and ETA count only this run's work."""

    def __init__(self, blocks: int, voxels: int, done_blocks: int = 0, done_voxels: int = 0,
                 stream: TextIO | None = None, quiet: bool = False, every: float | None = None) -> None:
        self.blocks, self.voxels = blocks, voxels
        self.done_blocks, self.done_voxels = done_blocks, done_voxels
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = self.stream.isatty()
        self.every = every if every is not None else (0.2 if self.tty else 5.0)
        self.start = time.perf_counter()
        self.work = 0
        self._shown = 0.0

    def advance(self, voxels: int) -> None:
        self.done_blocks += 1
        self.done_voxels += voxels
        self.work += voxels
        now = time.perf_counter()
        if now - self._shown >= self.every or self.done_blocks == self.blocks:
            self._shown = now
            self.show()

    def line(self) -> str:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = self.work / elapsed
        left = self.voxels - self.done_voxels
        eta = _duration(left / rate) if rate > 0 else "?"
        width = 24
        filled = width * self.done_blocks // max(self.blocks, 1)
        return (f"[{'#' * filled}{'.' * (width - filled)}] {self.done_blocks}/{self.blocks} blocks  "
                f"{_rate(rate)}  ETA {eta}  elapsed {_duration(elapsed)}  peak {human_bytes(peak_rss_bytes())}")

    def show(self) -> None:
        if self.quiet:
            return
        self.stream.write(("\r" + self.line()) if self.tty else self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        if not self.quiet and self.tty:
            self.stream.write("\n")
            self.stream.flush()
