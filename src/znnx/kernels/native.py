"""Build znnx's C kernels with the machine's C compiler on first use, cache and load the library.

The library is compiled for this CPU (`-march=native`) with OpenMP. It is loaded after torch, so
its OpenMP runtime is the one torch already loaded: the kernels run on torch's thread pool and obey
`torch.set_num_threads`. The cached file is keyed by the source, the flags, the compiler's version
and the CPU's feature flags; it lives under `znnx.cache.cache_dir()`. Set `CC` to choose the compiler.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import subprocess
import tempfile
from pathlib import Path

from znnx.cache import cache_dir
from znnx.errors import KernelUnavailable

FLAGS = ("-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-std=gnu11", "-shared",
         "-fPIC")


def cpuinfo(*keys: str) -> str:
    """The first line of /proc/cpuinfo that starts with one of `keys` ("" where there is none)."""
    try:
        return next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith(keys)), "")
    except OSError:
        return ""


def cpu_flags() -> str:
    """The CPU's instruction-set flags line (x86 `flags`, Arm `Features`), or its name where unknown."""
    return cpuinfo("flags", "Features") or platform.processor() or platform.machine()


def _compiler() -> list[str]:
    return os.environ.get("CC", "cc").split()


def _version(compiler: list[str]) -> str:
    try:
        done = subprocess.run([*compiler, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise KernelUnavailable(f"kernels: no C compiler ({' '.join(compiler)}: {error}); install gcc or set CC, "
                                f"or force algorithm='direct'") from None
    return done.stdout


def with_vectors(source: str) -> str:
    """`source` preceded by kernels/vector.h (the VB-float vector type, loads, stores, exp), which
    the kernels share; pasted rather than included, so the build cache key covers it."""
    from importlib.resources import files

    return files("znnx.kernels").joinpath("vector.h").read_text() + source


@functools.cache
def load(name: str, source: str) -> ctypes.CDLL:
    """The library built from `source` (C), compiling it unless a cached build exists."""
    import torch  # noqa: F401  (its OpenMP runtime must be loaded first, see the module docstring)

    compiler = _compiler()
    key = hashlib.sha256("\0".join([source, *FLAGS, _version(compiler), cpu_flags()]).encode()).hexdigest()[:20]
    target = cache_dir() / "kernels" / f"{name}-{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as work:
            src = Path(work) / f"{name}.c"
            src.write_text(source)
            built = Path(work) / target.name
            done = subprocess.run([*compiler, *FLAGS, str(src), "-o", str(built)], capture_output=True, text=True)
            if done.returncode != 0:
                raise KernelUnavailable(f"kernels: compiling {name} with {' '.join(compiler)} failed "
                                        f"(exit {done.returncode}):\n{done.stderr[-2000:]}\nforce algorithm='direct' "
                                        f"or fix the compiler (set CC)")
            os.replace(built, target)
    return ctypes.CDLL(str(target))
