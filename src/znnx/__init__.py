"""znnx: fast inference of 3D convolutional networks over large volumes."""

# isort: off
import znnx.preload  # noqa: F401  (sets the environment torch reads as it loads, before anything below loads it)

# isort: on
from znnx.errors import DeviceError, GraphError, InputError, ModelError, StorageError, UnsupportedError, ZnnxError
from znnx.frontends import load
from znnx.ir import Graph
from znnx.net import Net, compile, load_net  # noqa: A004  (the public name znnx.compile is intended)
from znnx.training.run import TrainOptions, train
from znnx.version import __version__
from znnx.volume import VolumeOptions, infer_volume

__all__ = [
    "DeviceError",
    "Graph",
    "GraphError",
    "InputError",
    "ModelError",
    "Net",
    "StorageError",
    "TrainOptions",
    "UnsupportedError",
    "VolumeOptions",
    "ZnnxError",
    "__version__",
    "compile",
    "infer_volume",
    "load",
    "load_net",
    "train",
]
