"""OpenMP settings znnx wants before torch loads its OpenMP runtime.

torch's OpenMP threads (GNU libgomp) spin 300,000 iterations after every parallel region before they
sleep. Between the small ops of a volume run (normalize, check, convert) that spinning burns a core
that chunk decoding and encoding need: a 512^3 uint8 zarr through a 1x1x1 net took 1.55 s with the
default and 1.23 s with 30,000, which costs the benchmark U-Nets nothing measurable (symmetric
651-670 vs 668 ms, residual 1,811 vs 1,833 ms). A value the user set wins; once torch is loaded it
no longer matters. Importing this module applies the setting (`znnx/__init__.py` imports it first).
"""

from __future__ import annotations

import os

SPINCOUNT = "30000"


os.environ.setdefault("GOMP_SPINCOUNT", SPINCOUNT)
