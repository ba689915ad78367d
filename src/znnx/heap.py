"""Give the memory freed on the C heap back to the operating system.

glibc serves allocations below its mmap threshold from the heap and keeps freed heap memory for
reuse; after it frees a large mmapped block it raises that threshold (up to 32 MiB), so that
tensors of a few to a few tens of MiB, freed, stay resident. The autotuner allocates such tensors
layer after layer (an input, a reference and an output per timed layer): on a 12-48 channel U-Net
its freed buffers kept 100-250 MiB resident into the net's run, above what the run needs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    return trim


def release() -> None:
    """Return the heap's free memory to the OS (glibc's malloc_trim); nothing elsewhere."""
    trim = _trim()
    if trim is not None:
        trim(0)
