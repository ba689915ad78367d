"""The parsers of untrusted files (Caffe prototxt, .caffemodel, ONNX, network files) fed random
bytes, truncations, byte flips and mutated fields raise only znnx errors, never a raw exception."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import znnx
from znnx.errors import ZnnxError
from znnx.frontends.prototxt import parse

ROOT = Path(__file__).resolve().parents[1]
PROTOTXT = (ROOT / "src" / "znnx" / "bench" / "pznet_unet.prototxt").read_text()[:6000]
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _only_znnx_errors(call: Callable[[], object]) -> None:
    """Run `call`; a znnx error is a fine answer to a damaged file, anything else fails the test."""
    with contextlib.suppress(ZnnxError):
        call()


def _mutations() -> st.SearchStrategy[tuple[str, int, int]]:
    return st.tuples(st.sampled_from(["truncate", "flip", "insert", "delete"]), st.integers(0, 10**9),
                     st.integers(0, 255))


def _mutate(data: bytes, how: tuple[str, int, int]) -> bytes:
    kind, where, value = how
    at = where % max(len(data), 1)
    if kind == "truncate":
        return data[:at]
    if kind == "flip":
        return data[:at] + bytes([data[at] ^ (1 << (value % 8))]) + data[at + 1:] if data else data
    if kind == "insert":
        return data[:at] + bytes([value]) + data[at:]
    return data[:at] + data[at + 1:]


@FUZZ
@given(text=st.text(alphabet=st.sampled_from(list("layer{}:\"name type bottom top 0123456789.-_#\n\t "))),
       how=_mutations())
def test_prototxt_parser(text: str, how: tuple[str, int, int]) -> None:
    _only_znnx_errors(lambda: parse(text))
    mutated = _mutate(PROTOTXT.encode(), how).decode("utf-8", errors="replace")
    _only_znnx_errors(lambda: parse(mutated))


@FUZZ
@given(how=_mutations())
def test_caffe_net_from_a_damaged_prototxt(tmp_path: Path, how: tuple[str, int, int]) -> None:
    path = tmp_path / "net.prototxt"
    path.write_bytes(_mutate(PROTOTXT.encode(), how))
    _only_znnx_errors(lambda: znnx.load(path, weights="random"))


@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    from znnx.demo import model_path

    return model_path().read_bytes()


@FUZZ
@given(how=st.lists(_mutations(), min_size=1, max_size=3), noise=st.binary(max_size=256))
def test_onnx_loader(tmp_path: Path, onnx_bytes: bytes, how: list[tuple[str, int, int]], noise: bytes) -> None:
    data = onnx_bytes
    for step in how:
        data = _mutate(data, step)
    path = tmp_path / "model.onnx"
    for content in (data, noise):
        path.write_bytes(content)
        _only_znnx_errors(lambda: znnx.compile(znnx.load(path, input_shape=(1, 16, 16, 16))))


@pytest.fixture(scope="module")
def network_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from znnx.demo import model_path

    path = tmp_path_factory.mktemp("fuzz") / "demo.znnx"
    znnx.compile(znnx.load(model_path(), input_shape=(1, 16, 16, 16))).save(path)
    return path.read_bytes()


@FUZZ
@given(how=st.lists(_mutations(), min_size=1, max_size=3))
def test_network_file_bytes(tmp_path: Path, network_file: bytes, how: list[tuple[str, int, int]]) -> None:
    data = network_file
    for step in how:
        data = _mutate(data, step)
    path = tmp_path / "net.znnx"
    path.write_bytes(data)
    _only_znnx_errors(lambda: znnx.load_net(path))


SCALARS = st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats(allow_nan=False) | st.text(max_size=8)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8)


@FUZZ
@given(path=st.lists(st.integers(0, 50), min_size=1, max_size=4), value=JSON)
def test_network_file_with_mutated_fields_and_a_valid_checksum(tmp_path: Path, network_file: bytes,
                                                               path: list[int], value: object) -> None:
    """An edited header whose checksum was recomputed (a crafted file) still fails cleanly."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    from znnx.plan import network_file as files

    source = tmp_path / "source.znnx"
    source.write_bytes(network_file)
    with safe_open(str(source), framework="numpy") as handle:
        metadata = dict(handle.metadata())
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    header = json.loads(metadata["graph"])
    node: object = header
    for step in path[:-1]:
        children = list(node.values()) if isinstance(node, dict) else node if isinstance(node, list) else []
        if not children:
            break
        node = children[step % len(children)]
    if isinstance(node, dict) and node:
        node[sorted(node)[path[-1] % len(node)]] = value
    elif isinstance(node, list) and node:
        node[path[-1] % len(node)] = value
    metadata["graph"] = json.dumps(header, sort_keys=True)
    metadata["sha256"] = files._digest(metadata["graph"], tensors)
    target = tmp_path / "edited.znnx"
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(target), metadata=metadata)
    _only_znnx_errors(lambda: znnx.load_net(target))
