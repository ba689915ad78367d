"""Where znnx keeps what it measures and builds on this machine: `$ZNNX_CACHE_DIR`, else
`$XDG_CACHE_HOME/znnx`, else `~/.cache/znnx` (the autotuner's choices, the compiled C kernels)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    if os.environ.get("ZNNX_CACHE_DIR"):
        return Path(os.environ["ZNNX_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "znnx"
