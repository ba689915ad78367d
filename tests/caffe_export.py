"""Test helper: write a znnx graph (imported from PyTorch) as a Caffe prototxt with its blobs, and
encode blobs as a binary .caffemodel, so Caffe import can be checked against PyTorch.

Caffe idioms are used where they apply: BatchNorm (blobs scaled by a factor of 2) + Scale,
in-place activations, MergeCrop for concat(a, center_crop(b, a)), Crop with offsets otherwise.
"""

from __future__ import annotations

import struct

import numpy as np

from znnx.ir.graph import Graph, Node
from znnx.ir.ops import center_crop_begin

Blobs = dict[str, list[np.ndarray]]
BN_FACTOR = 2.0


def _repeated(key: str, values: tuple[int, ...] | list[int]) -> str:
    return " ".join(f"{key}: {v}" for v in values)


def to_caffe(graph: Graph) -> tuple[str, Blobs]:
    rank = graph.spatial_rank
    axes = slice(3 - rank, 3)
    (source,) = graph.inputs
    names = {source: "data"}
    lines = [f'name: "{graph.name}"',
             f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ '
             f'{_repeated("dim", [1, graph.types[source].channels, *graph.types[source].spatial[axes]])} }} }} }}']
    blobs: Blobs = {}
    merged = {crop.output for node in graph.nodes if node.op == "concat" and len(node.inputs) == 2
              and (crop := graph.producer(node.inputs[1])) is not None and crop.op == "center_crop"
              and crop.inputs[1] == node.inputs[0] and len(graph.consumers(crop.output)) == 1}
    for node in graph.nodes:
        if node.output in merged:
            continue
        bottoms = [names.get(v, "") for v in node.inputs]
        single_use = len(node.inputs) == 1 and len(graph.consumers(node.inputs[0])) == 1 \
            and node.inputs[0] != source and node.inputs[0] not in graph.outputs
        top = bottoms[0] if node.op in ("relu", "elu", "sigmoid", "tanh", "leaky_relu") and single_use else node.name
        names[node.output] = top
        layer, extra = _layer(graph, node, bottoms, top, axes, blobs, merged, names)
        lines.append(layer)
        lines += extra
    return "\n".join(lines) + "\n", blobs


def _layer(graph: Graph, node: Node, bottoms: list[str], top: str, axes: slice, blobs: Blobs, merged: set[str],
           names: dict[str, str]) -> tuple[str, list[str]]:
    a = node.attrs
    head = f'layer {{ name: "{node.name}" {" ".join(f"bottom: {b!r}".replace(chr(39), chr(34)) for b in bottoms)} ' \
           f'top: "{top}" '
    if node.op in ("conv", "conv_transpose"):
        assert a["pads"][:3] == a["pads"][3:] and a.get("output_padding", (0, 0, 0)) == (0, 0, 0)
        weight = node.params["weight"]
        weight = weight.reshape(weight.shape[:2] + weight.shape[2:][axes])
        blobs[node.name] = [weight] + ([node.params["bias"]] if "bias" in node.params else [])
        c_out = graph.types[node.output].channels
        kind = "Convolution" if node.op == "conv" else "Deconvolution"
        return (head + f'type: "{kind}" convolution_param {{ num_output: {c_out} '
                f'bias_term: {str("bias" in node.params).lower()} {_repeated("kernel_size", a["kernel"][axes])} '
                f'{_repeated("stride", a["stride"][axes])} {_repeated("pad", a["pads"][:3][axes])} '
                f'{_repeated("dilation", a["dilation"][axes])} group: {a["groups"]} }} }}'), []
    if node.op == "batchnorm":
        p = node.params
        blobs[node.name] = [p["mean"] * BN_FACTOR, p["var"] * BN_FACTOR, np.array([BN_FACTOR])]
        blobs[node.name + "_scale"] = [p["gamma"], p["beta"]]
        return (head + f'type: "BatchNorm" batch_norm_param {{ eps: {a["eps"]} }} }}',
                [f'layer {{ name: "{node.name}_scale" type: "Scale" bottom: "{top}" top: "{top}" '
                 f'scale_param {{ bias_term: true }} }}'])
    if node.op in ("max_pool", "avg_pool"):
        kind = "MAX" if node.op == "max_pool" else "AVE"
        return (head + f'type: "Pooling" pooling_param {{ pool: {kind} {_repeated("kernel_size", a["kernel"][axes])} '
                f'{_repeated("stride", a["stride"][axes])} {_repeated("pad", a["pads"][:3][axes])} }} }}'), []
    if node.op == "concat" and len(node.inputs) == 2 and node.inputs[1] in merged:
        crop = graph.producer(node.inputs[1])
        assert crop is not None
        return (head.replace(f'bottom: "{bottoms[1]}"', f'bottom: "{names[crop.inputs[0]]}"')
                + 'type: "MergeCrop" }'), []
    if node.op == "center_crop":
        begin = center_crop_begin(graph.types[node.inputs[0]].spatial, graph.types[node.output].spatial)
        return head + f'type: "Crop" crop_param {{ axis: 2 {_repeated("offset", begin[axes])} }} }}', []
    simple = {"concat": 'type: "Concat"', "add": 'type: "Eltwise"', "elu": f'type: "ELU" elu_param {{ alpha: '
              f'{a.get("alpha", 1.0)} }}', "relu": 'type: "ReLU"', "sigmoid": 'type: "Sigmoid"', "tanh": 'type: "TanH"',
              "softmax": 'type: "Softmax"', "leaky_relu": f'type: "ReLU" relu_param {{ negative_slope: '
              f'{a.get("alpha", 0.0)} }}'}
    assert node.op in simple and not node.params, f"no Caffe form for {node.op} in this helper"
    return head + simple[node.op] + " }", []


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def caffemodel(blobs: Blobs) -> bytes:
    """A binary NetParameter holding `blobs` (float data, BlobShape dims), as Caffe writes it."""
    layers = b""
    for name, arrays in blobs.items():
        encoded = _field(1, name.encode()) + _field(2, b"Layer")
        for array in arrays:
            dims = b"".join(_varint(d) for d in array.shape)
            data = struct.pack(f"<{array.size}f", *np.asarray(array, dtype=np.float32).reshape(-1))
            encoded += _field(7, _field(7, _field(1, dims)) + _field(5, data))
        layers += _field(100, encoded)
    return _field(1, b"net") + layers


def npz_arrays(blobs: Blobs) -> dict[str, np.ndarray]:
    return {f"{name}/{i}": array for name, arrays in blobs.items() for i, array in enumerate(arrays)}
