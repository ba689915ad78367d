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
from znnx.plan import autotune, network_file


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


def test_round_trip_keeps_a_streamed_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan with a conv streamed into the next (plan.memory.Stream) saves it in its memory plan and
    loads to the same net."""
    import torch.nn as nn

    from znnx.plan import memory

    monkeypatch.setattr(memory, "STREAM_MIN_BYTES", 1)
    monkeypatch.setattr(memory, "STREAM_PLANES", 4)
    model = nn.Sequential(nn.Conv3d(1, 8, 3), nn.ReLU(), nn.Conv3d(8, 2, 3)).eval()
    net = znnx.compile(znnx.load(model, (1, 21, 12, 12)))
    assert net.plan.memory.streams
    path = net.save(tmp_path / "net.znnx")
    loaded = znnx.load_net(path)
    assert loaded.plan.memory.streams == net.plan.memory.streams
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
    _edit_header(path, lambda h: h["plan"]["memory"]["slot_bytes"].__setitem__(0, 16))
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


def _tuned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[znnx.Net, Path]:
    """A net whose convolutions were measured (wide enough to tune), saved; the tuning cache emptied."""
    from tests.plan.test_autotune import wide_graph

    monkeypatch.setenv("ZNNX_CACHE_DIR", str(tmp_path / "first-cache"))
    net = znnx.compile(wide_graph(), optimize=False)
    assert any(c.source == "measured" for c in net.algorithms)
    path = net.save(tmp_path / "tuned.znnx")
    monkeypatch.setenv("ZNNX_CACHE_DIR", str(tmp_path / "second-cache"))
    return net, path


def _no_timing(*args: object) -> None:
    raise AssertionError("a saved choice was timed again")


def test_saved_plan_runs_its_algorithms_without_timing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    net, path = _tuned(tmp_path, monkeypatch)
    monkeypatch.setattr(autotune, "_measure", _no_timing)
    loaded = znnx.load_net(path)
    assert [(c.node, c.algorithm, c.seconds) for c in loaded.algorithms] == \
        [(c.node, c.algorithm, c.seconds) for c in net.algorithms]
    assert {c.source for c in loaded.algorithms} == {"saved"}
    assert not (tmp_path / "second-cache" / "autotune.json").exists()
    x = np.random.default_rng(0).standard_normal(net.input_shape).astype(np.float32)
    np.testing.assert_array_equal(loaded(x), net(x))
    assert path.stat().st_mode & 0o777 == 0o644


def test_another_kind_of_machine_tunes_again_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from znnx.backends import cpu

    _, path = _tuned(tmp_path, monkeypatch)
    monkeypatch.setattr(cpu, "machine", lambda device: "cpu: another model (isa 000000000000)")
    loaded = znnx.load_net(path)
    assert "measured" in {c.source for c in loaded.algorithms}
    err = capsys.readouterr().err
    assert "was tuned on cpu:" in err and "this is cpu: another model" in err and len(err.splitlines()) == 1


def test_forcing_an_algorithm_on_load_overrides_the_saved_choices(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _, path = _tuned(tmp_path, monkeypatch)
    assert {c.algorithm.name for c in znnx.load_net(path, algorithm="direct").algorithms} == {"direct"}


def test_version_1_files_still_load_and_tune(tmp_path: Path) -> None:
    _, path = _saved(tmp_path)

    def to_version_1(metadata: dict, tensors: dict) -> None:
        header = json.loads(metadata["graph"])
        plan = header.pop("plan")
        header.update(plan=plan["memory"], plan_device=plan["device"], plan_precision=plan["precision"])
        metadata["graph"] = json.dumps(header, sort_keys=True)
        metadata["version"] = "1"
        metadata["sha256"] = network_file._digest(metadata["graph"], tensors)

    _rewrite(path, to_version_1)
    assert {c.source for c in znnx.load_net(path).algorithms} <= {"rule", "measured", "cache"}
