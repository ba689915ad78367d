"""Settings znnx wants in the environment before torch loads (a value the user set wins; once torch is
loaded they no longer matter). Importing this module applies them (`znnx/__init__.py` imports it
first).

- `GOMP_SPINCOUNT=30000`: torch's OpenMP threads (GNU libgomp) spin 300,000 iterations after every
  parallel region before they sleep. Between the small ops of a volume run (normalize, check,
  convert) that spinning burns a core that chunk decoding and encoding need: a 512^3 uint8 zarr
  through a 1x1x1 net took 1.55 s with the default and 1.23 s with 30,000, which costs the benchmark
  U-Nets nothing measurable (symmetric 651-670 vs 668 ms, residual 1,811 vs 1,833 ms).
- `THP_MEM_ALLOC_ENABLE=1`: torch's CPU allocator asks for transparent huge pages (2 MiB) for
  tensors of 2 MiB and more (where the kernel grants them on request, `madvise` mode, the common
  default). glibc maps tensors above 32 MiB afresh on every allocation, so a kernel that allocates
  slab-sized tensors per call paid a page fault per 4 KiB each time: an 80-channel FFT layer (7^3
  kernel, 89^3 input, 77 MB spectra per slab) spent a third of its time in the kernel's page-fault
  path; with huge pages it ran 2.06 -> 1.52 s, a 9^3 one 0.46 -> 0.30 s, whole U-Nets unchanged
  (symmetric, original) or slightly faster (pznet 357 -> 350 ms, tiny 75 -> 70 ms).
"""

from __future__ import annotations

import os

SPINCOUNT = "30000"

os.environ.setdefault("GOMP_SPINCOUNT", SPINCOUNT)
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
