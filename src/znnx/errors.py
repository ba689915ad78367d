"""The znnx error hierarchy.

Every message names the component that failed, the constraint that was broken, the values seen and
the fix, so a user never needs a traceback from inside a library to act on it.
"""

from __future__ import annotations

__all__ = ["ClusterError", "DeviceError", "GraphError", "InputError", "KernelUnavailable", "ModelError", "StorageError",
           "UnsupportedError", "ZnnxError"]


class ZnnxError(Exception):
    """Base class of every error znnx raises on purpose."""


class ModelError(ZnnxError):
    """A model file or module cannot be read: corrupt, truncated, dynamic, or inconsistent."""


class UnsupportedError(ModelError):
    """A model uses an operator or an operator feature that znnx does not implement."""


class GraphError(ZnnxError):
    """A graph breaks an IR rule: a dangling edge, a bad attribute or incompatible shapes."""


class InputError(ZnnxError):
    """An array handed to a compiled net has the wrong shape or dtype."""


class DeviceError(ZnnxError):
    """A requested device is unknown or not present on this machine."""


class StorageError(ZnnxError):
    """A volume cannot be read or written: missing, wrong shape or dtype, unwritable, or a resume
    ledger that belongs to a different run."""


class ClusterError(ZnnxError):
    """A Dask cluster cannot run a volume job: no workers, or workers lost over and over."""


class KernelUnavailable(ZnnxError):
    """A compiled kernel cannot be built or loaded here (no C compiler, or the build failed)."""
