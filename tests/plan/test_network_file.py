"""Network files: exact round trip, and clear refusals of truncated, edited or foreign files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

import znnx
from tests.nets import cases
from znnx.errors import ModelError
from znnx.plan import network_file


def _saved(tmp_path: Path, index: int = 1) -> tuple[znnx.Net, Path]:
    case = cases()[index]
    net = znnx.compile(znnx.load(case.build(), case.input_shape))
    return net, net.save(tmp_path / "net.znnx")


@pytest.mark.parametrize("index", [0, 2, 4, 5], ids=lambda i: cases()[i].name)
def test_round_trip_gives_the_same_net(tmp_path: Path, index: int) -> None:
    net, path = _saved(tmp_path, index)
    loaded = znnx.load_net(path)
    assert [n.op for n in loaded.graph.nodes] == [n.op for n in net.graph.nodes]
    assert loaded.rewrites == net.rewrites and loaded.input_shape == net.input_shape
    assert loaded.memory_bytes() == net.memory_bytes()
    x = np.random.default_rng(0).standard_normal(net.input_shape).astype(np.float32)
    np.testing.assert_array_equal(loaded(x), net(x))


def _rewrite(path: Path, edit: object) -> None:
    with safe_open(str(path), framework="numpy") as handle:
        metadata = dict(handle.metadata())
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    edit(metadata, tensors)  # type: ignore[operator]
    save_file(tensors, str(path), metadata=metadata)


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    _, path = _saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="not a readable safetensors file"):
        znnx.load_net(path)


def test_edited_weight_fails_the_checksum(tmp_path: Path) -> None:
    _, path = _saved(tmp_path)

    def edit(metadata: dict, tensors: dict) -> None:
        key = next(iter(tensors))
        tensors[key] = tensors[key] + 1

    _rewrite(path, edit)
    with pytest.raises(ModelError, match="fails its checksum"):
        znnx.load_net(path)


def _edit_header(path: Path, change: object) -> None:
    def edit(metadata: dict, tensors: dict) -> None:
        header = json.loads(metadata["graph"])
        change(header)  # type: ignore[operator]
        metadata["graph"] = json.dumps(header, sort_keys=True)
        metadata["sha256"] = network_file._digest(metadata["graph"], tensors)

    _rewrite(path, edit)


def test_unknown_op_with_a_valid_checksum_is_refused(tmp_path: Path) -> None:
    _, path = _saved(tmp_path)
    _edit_header(path, lambda h: h["graph"]["nodes"][0].update(op="__import__('os').system"))
    with pytest.raises(ModelError, match=r"invalid graph.*unknown op"):
        znnx.load_net(path)


def test_edited_memory_plan_is_refused(tmp_path: Path) -> None:
    _, path = _saved(tmp_path)
    _edit_header(path, lambda h: h["plan"]["slot_bytes"].__setitem__(0, 16))
    with pytest.raises(ModelError, match="memory plan that differs"):
        znnx.load_net(path)


def test_malformed_header_is_refused(tmp_path: Path) -> None:
    _, path = _saved(tmp_path)
    _edit_header(path, lambda h: h["graph"].pop("types"))
    with pytest.raises(ModelError, match=r"malformed header.*KeyError"):
        znnx.load_net(path)


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "weights.znnx"
    save_file({"w": np.zeros(3, np.float32)}, str(other))
    with pytest.raises(ModelError, match="not a znnx network file"):
        znnx.load_net(other)
    with pytest.raises(ModelError, match="does not exist"):
        znnx.load_net(tmp_path / "missing.znnx")
    junk = tmp_path / "junk.znnx"
    junk.write_bytes(b"\x80\x04\x95 a pickle, perhaps")
    with pytest.raises(ModelError, match="not a readable safetensors file"):
        znnx.load_net(junk)
