"""heap.release: freed heap memory goes back to the OS on glibc, and nothing fails elsewhere."""

from __future__ import annotations

import platform

import numpy as np

from znnx import heap


def _resident_kib() -> int:
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])


def test_freed_blocks_below_the_mmap_threshold_are_returned() -> None:
    if platform.system() != "Linux" or heap._trim() is None:
        heap.release()
        return
    big = np.ones(2 << 20)
    del big  # a freed 16 MiB mmapped block raises glibc's mmap threshold
    blocks = [np.ones(1 << 18) for _ in range(100)]  # 2 MiB each: heap blocks now
    del blocks[::2]  # freed between live ones: the heap's top cannot shrink over them
    before = _resident_kib()
    heap.release()
    assert _resident_kib() < before - 50 * 1024
