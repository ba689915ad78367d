"""Bad models give one clear error naming what is wrong and where, never a library traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from torch import nn

import znnx
from znnx.demo import model_path


def _onnx_model(op: str, dtype: int = onnx.TensorProto.FLOAT, shape: tuple = (1, 2, 4, 4, 4), **attrs: object):
    node = helper.make_node(op, ["x"], ["y"], name="the_node", **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", dtype, shape)],
                              [helper.make_tensor_value_info("y", dtype, shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_corrupt_onnx_file(tmp_path: Path) -> None:
    path = tmp_path / "noise.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(znnx.ModelError, match=r"onnx frontend: .*noise\.onnx.*(not a readable ONNX|no graph nodes)"):
        znnx.load(path)


def test_truncated_onnx_file(tmp_path: Path) -> None:
    data = model_path().read_bytes()
    path = tmp_path / "cut.onnx"
    for keep in (len(data) // 2, len(data) - 7, 100):
        path.write_bytes(data[:keep])
        with pytest.raises(znnx.ModelError, match=r"onnx frontend: .*cut\.onnx"):
            znnx.load(path)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(znnx.ModelError, match="holds no graph nodes"):
        znnx.load(tmp_path / "empty.onnx")
    with pytest.raises(znnx.ModelError, match="does not exist"):
        znnx.load(tmp_path / "nowhere.onnx")
    with pytest.raises(znnx.ModelError, match="cannot tell the format"):
        znnx.load(tmp_path / "model.pb")


def test_unsupported_onnx_op_names_node_and_op() -> None:
    with pytest.raises(znnx.UnsupportedError, match=r"node 'the_node' \(Floor\): operator Floor is not supported"):
        znnx.load(_onnx_model("Floor"))


def test_unsupported_onnx_attribute() -> None:
    with pytest.raises(znnx.UnsupportedError, match=r"'the_node' \(Softmax\): Softmax over axis -1"):
        znnx.load(_onnx_model("Softmax"))


def test_integer_onnx_input() -> None:
    with pytest.raises(znnx.UnsupportedError, match="input 'x' has element type INT32"):
        znnx.load(_onnx_model("Relu", onnx.TensorProto.INT32))


def test_symbolic_spatial_axes_stay_free_and_a_symbolic_channel_axis_is_named() -> None:
    model = _onnx_model("Relu", shape=("N", 2, "D", 4, 4))
    graph = znnx.load(model)
    assert graph.types[graph.inputs[0]].spatial == (64, 4, 4)  # the first size tried along the free axis
    assert znnx.compile(graph, patch=(6, 4, 4)).output_shape == (2, 6, 4, 4)
    assert znnx.compile(znnx.load(model, input_shape=(2, 6, 4, 4))).output_shape == (2, 6, 4, 4)
    with pytest.raises(znnx.ModelError, match=r"symbolic channel axis .*--input-shape C,D,H,W.*input_shape="):
        znnx.load(_onnx_model("Relu", shape=("N", "C", 4, 4, 4)))


def test_onnx_undefined_input_names_it() -> None:
    node = helper.make_node("Add", ["x", "ghost"], ["y"], name="adder")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, (1, 2, 4, 4, 4))],
                              [helper.make_tensor_value_info("y", 1, (1, 2, 4, 4, 4))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(znnx.ModelError, match=r"'ghost'"):
        znnx.load(model)


class _Branchy(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.mean() > 0:
            return x * 2
        return x


class _Floor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.floor(self.conv(x))


def test_dynamic_control_flow_is_named_with_its_line() -> None:
    with pytest.raises(znnx.ModelError, match=r"dynamic control flow at .*test_errors\.py:\d+ `if x\.mean\(\) > 0:`"):
        znnx.load(_Branchy(), input_shape=(1, 8, 8, 8))


def test_unsupported_torch_op_names_code_line() -> None:
    message = r"test_errors\.py:\d+ `return torch\.floor.*aten\.floor is not supported"
    with pytest.raises(znnx.UnsupportedError, match=message):
        znnx.load(_Floor(), input_shape=(1, 8, 8, 8))


def test_module_needs_input_shape() -> None:
    with pytest.raises(znnx.ModelError, match=r"input_shape=\(C, \*spatial\) is required"):
        znnx.load(_Floor())


def test_load_rejects_other_objects() -> None:
    with pytest.raises(znnx.ModelError, match="cannot import a dict"):
        znnx.load({})


def test_import_keeps_training_flag() -> None:
    model = nn.Sequential(nn.Conv3d(1, 1, 1)).train()
    znnx.load(model, input_shape=(1, 2, 2, 2))
    assert model.training


@pytest.mark.parametrize("norm", [nn.InstanceNorm3d(2, affine=True), nn.GroupNorm(1, 2), nn.LayerNorm([2, 6, 6, 6])],
                         ids=["instance", "group", "layer"])
def test_norms_by_input_statistics_are_refused_with_the_reason(norm: nn.Module) -> None:
    with pytest.raises(znnx.UnsupportedError, match=r"statistics of the whole input.*no blockwise run.*BatchNorm"):
        znnx.load(nn.Sequential(nn.Conv3d(1, 2, 3), norm).eval(), input_shape=(1, 8, 8, 8))


def test_onnx_instance_normalization_is_refused_with_the_reason() -> None:
    node = helper.make_node("InstanceNormalization", ["x", "scale", "b"], ["y"], name="norm")
    shape = (1, 2, 4, 4, 4)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, shape)],
                              [numpy_helper.from_array(np.ones(2, np.float32), "scale"),
                               numpy_helper.from_array(np.zeros(2, np.float32), "b")])
    with pytest.raises(znnx.UnsupportedError, match=r"'norm' \(InstanceNormalization\): InstanceNormalization "
                                                    r"normalizes .* whole input"):
        znnx.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_softplus_with_another_beta_is_refused() -> None:
    with pytest.raises(znnx.UnsupportedError, match=r"softplus with beta=2.0; znnx supports beta=1"):
        znnx.load(nn.Sequential(nn.Conv3d(1, 2, 3), nn.Softplus(beta=2.0)).eval(), input_shape=(1, 8, 8, 8))
