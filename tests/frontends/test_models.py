"""Whole nets through both frontends: znnx == PyTorch within 1e-4 relative, and the reference agrees."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import pytest
import torch

import znnx
from tests.nets import Case, ValidUNet, cases, randomize, rel_error
from znnx import reference

TOLERANCE = 1e-4


def _expected(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _onnx(model: torch.nn.Module, x: np.ndarray, keep_batchnorm: bool) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(x),), buffer, dynamo=False, opset_version=17,
                          training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=not keep_batchnorm)
    return onnx.load_from_string(buffer.getvalue())


def _check(graph: znnx.Graph, x: np.ndarray, expected: np.ndarray) -> None:
    net = znnx.compile(graph)
    assert rel_error(net(x), expected) < TOLERANCE
    lifted = x.reshape(x.shape[:2] + graph.types[graph.inputs[0]].spatial)
    oracle = reference.run(net.graph, {graph.inputs[0]: lifted})[graph.outputs[0]]
    assert rel_error(oracle.reshape(expected.shape), expected) < TOLERANCE


@pytest.mark.parametrize("case", cases(), ids=str)
def test_torch_frontend_matches_pytorch(case: Case) -> None:
    model = case.build()
    x = np.random.default_rng(1).standard_normal((2, *case.input_shape), dtype=np.float32)
    _check(znnx.load(model, case.input_shape), x, _expected(model, x))


def test_torch_import_leaves_no_exported_program_alive() -> None:
    """torch.export's program lives in reference cycles: the import collects them (and trims the heap),
    so its memory is not resident into the compile and the run."""
    import gc

    gc.disable()
    try:
        znnx.load(ValidUNet(4), input_shape=(1, 44, 44, 44))
        alive = [o for o in gc.get_objects() if isinstance(o, torch.export.ExportedProgram)]
    finally:
        gc.enable()
    assert alive == []


@pytest.mark.parametrize("case", cases(), ids=str)
def test_onnx_frontend_matches_pytorch(case: Case) -> None:
    model = case.build()
    x = np.random.default_rng(2).standard_normal((1, *case.input_shape), dtype=np.float32)
    graph = znnx.load(_onnx(model, x, keep_batchnorm=case.name.startswith(("valid", "net2d"))))
    _check(graph, x, _expected(model, x))


def test_onnx_keeps_batchnorm_when_exported_unfolded() -> None:
    model = randomize(ValidUNet(2), 0)
    x = np.zeros((1, 1, 44, 44, 44), np.float32)
    graph = znnx.load(_onnx(model, x, keep_batchnorm=True))
    assert sum(node.op == "batchnorm" for node in graph) == 6  # three blocks of two


@pytest.mark.parametrize("frontend", ["torch", "onnx"])
def test_valid_unet_recompiles_at_another_patch(frontend: str) -> None:
    """Traced centre crops become crops to the reference, so other patch sizes stay correct."""
    model = randomize(ValidUNet(2), 3)
    traced = np.zeros((1, 1, 44, 44, 44), np.float32)
    graph = znnx.load(model, (1, 44, 44, 44)) if frontend == "torch" else znnx.load(_onnx(model, traced, False))
    assert sum(node.op == "center_crop" for node in graph) == 1
    x = np.random.default_rng(4).standard_normal((1, 1, 52, 48, 60), dtype=np.float32)
    net = znnx.compile(graph, patch=(52, 48, 60))
    assert net.output_shape == (3, 36, 32, 44)
    assert rel_error(net(x), _expected(model, x)) < TOLERANCE


@pytest.mark.parametrize("opset", [13, 21])
def test_onnx_opset_range(opset: int) -> None:
    """The ends of the supported opset range: exported at 13, converted up to 21."""
    from onnx import version_converter

    model = randomize(ValidUNet(2), 5)
    x = np.random.default_rng(5).standard_normal((1, 1, 44, 44, 44), dtype=np.float32)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(x),), buffer, dynamo=False, opset_version=13)
    proto = version_converter.convert_version(onnx.load_from_string(buffer.getvalue()), opset)
    assert proto.opset_import[0].version == opset
    assert rel_error(znnx.compile(znnx.load(proto))(x), _expected(model, x)) < TOLERANCE


def _dynamic_unet(tmp_path: object) -> tuple[torch.nn.Module, str]:
    """A valid U-Net exported with dynamic D, H, W: its centre crops are Shape/Gather/Sub/Div/Slice
    arithmetic on the input size."""
    from pathlib import Path

    model = randomize(ValidUNet(2), 7)
    path = str(Path(str(tmp_path)) / "dynamic.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 1, 44, 44, 44),), path, dynamo=False, opset_version=17,
                          input_names=["raw"], output_names=["affinities"],
                          dynamic_axes={"raw": {0: "N", 2: "D", 3: "H", 4: "W"}, "affinities": {0: "N", 2: "d", 3: "h",
                                                                                                 4: "w"}})
    ops = {node.op_type for node in onnx.load(path).graph.node}
    assert {"Shape", "Slice"} <= ops
    return model, path


def test_dynamic_onnx_unet_runs_at_any_valid_patch(tmp_path: object) -> None:
    model, path = _dynamic_unet(tmp_path)
    graph = znnx.load(path)
    assert graph.source is not None
    for patch in ((44, 44, 44), (60, 52, 68)):
        net = znnx.compile(graph, patch=patch)
        x = np.random.default_rng(3).standard_normal((1, 1, *patch), dtype=np.float32)
        assert rel_error(net(x[0]), _expected(model, x)[0]) < TOLERANCE, patch


def test_dynamic_onnx_unet_through_the_command_line(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    from znnx.cli import main

    _, path = _dynamic_unet(tmp_path)
    folder = Path(str(tmp_path))
    assert main(["inspect", path, "--patch", "52,52,60"]) == 0
    assert "input 52x52x60" in capsys.readouterr().out
    assert main(["compile", path, "--patch", "60,52,68", "-o", str(folder / "net.znnx")]) == 0
    volume = np.random.default_rng(4).random((40, 50, 45)).astype(np.float32)
    np.save(folder / "raw.npy", volume)
    assert main(["infer", path, str(folder / "raw.npy"), str(folder / "out.npy"), "--quiet"]) == 0
    out = np.load(folder / "out.npy")
    assert out.shape == (3, 40, 50, 45) and np.isfinite(out).all()
    assert main(["infer", str(folder / "net.znnx"), str(folder / "raw.npy"), str(folder / "out2.npy"), "--quiet"]) == 0
    np.testing.assert_allclose(np.load(folder / "out2.npy"), out, atol=1e-5)
