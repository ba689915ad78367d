"""Model importers: `load` dispatches on what it is given."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from znnx.errors import ModelError
from znnx.ir.graph import Graph


def load(model: Any, input_shape: Sequence[int] | None = None, weights: Any = None) -> Graph:
    """Import a model as a verified Graph.

    `model` is a `torch.nn.Module`, a path to an `.onnx`, Caffe `.prototxt` or ZNN `.znn` file, or an
    `onnx.ModelProto`. `input_shape` is (C, *spatial) of one input patch; required for modules,
    optional for files whose input shape is static (a .znn net's default is its field of view).
    `weights` is for Caffe nets (a .caffemodel/.npz/.h5 path, a mapping {layer: [blobs]}, or
    "random") and ZNN nets (a safetensors file or mapping, see frontends/from_znn.py; default: the
    net's own init rules). A .znn net is ZNN's sliding-window net: compile it with dense=True.
    """
    takes_weights = (".prototxt", ".znn")
    if weights is not None and not (isinstance(model, str | Path) and Path(model).suffix.lower() in takes_weights):
        raise ModelError("load: weights= is only for Caffe .prototxt and ZNN .znn models; other formats carry "
                         "their weights")
    if isinstance(model, str | Path):
        path = Path(model)
        if path.suffix.lower() == ".znn":
            from znnx.frontends.from_znn import load_znn

            return load_znn(path, input_shape, weights)
        if path.suffix.lower() == ".onnx":
            from znnx.frontends.from_onnx import load_onnx

            return load_onnx(path, input_shape)
        if path.suffix.lower() == ".prototxt":
            from znnx.frontends.from_caffe import load_caffe

            return load_caffe(path, weights, input_shape)
        raise ModelError(f"load: cannot tell the format of {str(path)!r}; znnx reads .onnx, .prototxt and .znn "
                         f"files and torch.nn.Module objects")
    if type(model).__module__.startswith("onnx"):
        from znnx.frontends.from_onnx import load_onnx

        return load_onnx(model, input_shape)
    if _is_module(model):
        from znnx.frontends.from_torch import load_module

        return load_module(model, input_shape)
    raise ModelError(f"load: cannot import a {type(model).__name__}; pass a torch.nn.Module, "
                     f"an .onnx path or an onnx.ModelProto")


def _is_module(model: Any) -> bool:
    return any(c.__module__ == "torch.nn.modules.module" and c.__name__ == "Module" for c in type(model).__mro__)
