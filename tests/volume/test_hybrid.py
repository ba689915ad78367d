"""Hybrid runs: several nets of one model (one per device, each with its own patch) take blocks
from one queue, and the result is the single-net result. On a machine without a GPU the helpers are
CPU nets, which exercises the same queue, retiling and failure paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import znnx
from tests.nets import SymmetricUNet, ValidUNet, randomize
from tests.volume.test_runner import VOLUME, _read, _whole_volume
from znnx.errors import DeviceError, InputError
from znnx.report import geometry
from znnx.volume import VolumeOptions, infer_volume
from znnx.volume.block import tiling
from znnx.volume.runner import retiling, run_volume


@pytest.fixture(scope="module")
def volume_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, np.ndarray]:
    data = np.random.default_rng(3).random(VOLUME).astype(np.float32)
    path = tmp_path_factory.mktemp("volume") / "raw.npy"
    np.save(path, data)
    return str(path), data


@pytest.mark.parametrize(("name", "primary", "helper"), [
    ("valid", (40, 36, 44), (28, 28, 28)),
    ("same", (36, 28, 36), (28, 28, 28)),  # both pad the volume to (38, 30, 44)
])
def test_helpers_with_their_own_patch_give_the_single_net_result(
        tmp_path: Path, volume_file: tuple[str, np.ndarray], name: str, primary: tuple[int, ...],
        helper: tuple[int, ...]) -> None:
    source, data = volume_file
    model = randomize(ValidUNet(3) if name == "valid" else SymmetricUNet(3, levels=2), 0)
    graph = znnx.load(model, input_shape=(1, *helper))
    net, small = znnx.compile(graph, patch=primary), znnx.compile(graph, patch=helper)
    summary = run_volume(net, source, str(tmp_path / "h.npy"), quiet=True, helpers=[small])
    expected = _whole_volume(model, net, data)
    got = _read(str(tmp_path / "h.npy"))
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()
    assert summary.workers == 2 and summary.computed == summary.blocks > 2
    counts = [d["blocks"] for d in summary.devices]
    assert sum(counts) == summary.blocks and min(counts) >= 1, summary.notes
    assert [d["patch"] for d in summary.devices] == [list(primary), list(helper)]


def test_retiling_refuses_what_would_change_the_result(volume_file: tuple[str, np.ndarray]) -> None:
    graph = znnx.load(randomize(SymmetricUNet(3, levels=2), 0), input_shape=(1, 16, 16, 16))
    big, small = znnx.compile(graph, patch=(48, 48, 48)), znnx.compile(graph, patch=(16, 16, 16))
    layout = tiling(geometry(big.graph))
    assert retiling(big, layout, VOLUME, "exact") is None
    with pytest.raises(InputError, match=r"helper net of patch \(16, 16, 16\).*another extent"):
        retiling(small, layout, VOLUME, "exact")  # patch 48 pads the volume to (48, 48, 48), 16 to (38, 30, 44)
    with pytest.raises(InputError, match="blend mode tiles windows of one patch"):
        retiling(small, tiling(geometry(znnx.compile(graph, patch=(32, 32, 32)).graph)), VOLUME, "blend")


@pytest.mark.parametrize("mode", ["exact", "blend"])
def test_infer_volume_on_two_devices_chooses_a_patch_for_each(
        tmp_path: Path, volume_file: tuple[str, np.ndarray], mode: str) -> None:
    source, _ = volume_file
    graph = znnx.load(randomize(SymmetricUNet(3, levels=2), 1), input_shape=(1, 16, 16, 16))
    options = VolumeOptions(mode=mode)
    two = infer_volume(graph, source, str(tmp_path / "two.npy"), options=options, device="cpu, cpu", quiet=True)
    assert sum(n.startswith("autopatch (cpu)") for n in two.notes) == 2
    assert two.workers == 2 and any(n.startswith("hybrid: cpu") for n in two.notes)
    infer_volume(graph, source, str(tmp_path / "one.npy"), two.patch, options, device="cpu", quiet=True)
    np.testing.assert_allclose(_read(str(tmp_path / "two.npy")), _read(str(tmp_path / "one.npy")), atol=1e-5)


def test_a_failing_helper_stops_the_run_and_the_rerun_finishes(
        tmp_path: Path, volume_file: tuple[str, np.ndarray]) -> None:
    source, _ = volume_file
    graph = znnx.load(randomize(ValidUNet(3), 2), input_shape=(1, 28, 28, 28))
    net, helper = znnx.compile(graph, patch=(28, 28, 28)), znnx.compile(graph, patch=(28, 28, 28))

    def broken(inputs: object) -> list[torch.Tensor]:
        raise RuntimeError("helper device lost (test)")

    helper._run = broken
    target = str(tmp_path / "f.zarr")
    with pytest.raises(RuntimeError, match="device lost"):
        run_volume(net, source, target, quiet=True, helpers=[helper])
    summary = run_volume(net, source, target, quiet=True)
    assert summary.resumed < summary.blocks
    single = run_volume(net, source, str(tmp_path / "single.zarr"), quiet=True)
    np.testing.assert_array_equal(_read(target), _read(str(tmp_path / "single.zarr")))
    assert single.computed == single.blocks


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without a GPU")
def test_hybrid_with_cuda_but_no_gpu_says_so(tmp_path: Path, volume_file: tuple[str, np.ndarray]) -> None:
    graph = znnx.load(randomize(ValidUNet(3), 2), input_shape=(1, 28, 28, 28))
    with pytest.raises(DeviceError, match="no CUDA GPU is available"):
        infer_volume(graph, volume_file[0], str(tmp_path / "c.npy"), patch=(28, 28, 28), device="cuda,cpu",
                     quiet=True)


def test_a_compiled_net_runs_as_it_is(tmp_path: Path, volume_file: tuple[str, np.ndarray],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """No device or precision given: the net's own (a bf16 or GPU net is not recompiled for the CPU in fp32)."""
    net = znnx.compile(znnx.load(randomize(ValidUNet(3), 4), input_shape=(1, 28, 28, 28)), patch=(28, 28, 28))

    def recompiled(*args: object, **kwargs: object) -> None:
        raise AssertionError("infer_volume recompiled a net it was given")

    monkeypatch.setattr("znnx.volume.devices.compile", recompiled)
    assert infer_volume(net, volume_file[0], str(tmp_path / "n.npy"), quiet=True).computed > 0
    with pytest.raises(AssertionError, match="recompiled"):
        infer_volume(net, volume_file[0], str(tmp_path / "m.npy"), quiet=True, precision="bf16")


class _Timed:
    """A stand-in for a BlockJob that has timed its blocks."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds

    def seconds_per_block(self) -> float | None:
        return self.seconds


@pytest.mark.parametrize(("slow", "fast", "left", "declines"), [
    (1.0, 0.1, 3, True),    # the fast device finishes the 3 queued blocks in 0.3 s, before one slow block
    (1.0, 0.1, 20, False),  # 20 blocks take the fast one 2 s: the slow one's block still helps
    (0.1, 0.1, 1, False),   # equal devices: the last block is taken
    (None, 0.1, 1, False),  # not timed yet: takes
])
def test_a_slow_device_stops_taking_blocks_near_the_end(slow: float | None, fast: float, left: int,
                                                       declines: bool) -> None:
    from znnx.volume.block import Block
    from znnx.volume.runner import _Queue

    queue = _Queue([Block(i, None, (), ()) for i in range(left)])  # type: ignore[arg-type]
    slow_job, fast_job = _Timed(slow), _Timed(fast)
    queue.jobs = [fast_job, slow_job]  # type: ignore[list-item]
    assert (queue.take(slow_job) is None) == declines  # type: ignore[arg-type]
    assert queue.take(fast_job) is not None or (left == 1 and not declines)  # type: ignore[arg-type]


def test_a_slow_helper_takes_few_blocks_and_changes_nothing(tmp_path: Path,
                                                             volume_file: tuple[str, np.ndarray]) -> None:
    import time

    source, _ = volume_file
    graph = znnx.load(randomize(ValidUNet(3), 2), input_shape=(1, 28, 28, 28))
    net = znnx.compile(graph, patch=(28, 28, 28))

    class Slow(znnx.Net):
        def __call__(self, *inputs: object) -> object:
            time.sleep(0.1)
            return super().__call__(*inputs)

    slow = znnx.compile(graph, patch=(28, 28, 28))  # its own arena: nets are not shared between threads
    slow.__class__ = Slow
    summary = run_volume(net, source, str(tmp_path / "s.npy"), quiet=True, helpers=[slow])
    run_volume(net, source, str(tmp_path / "a.npy"), quiet=True)
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), np.load(tmp_path / "a.npy"))
    fast_blocks, slow_blocks = (d["blocks"] for d in summary.devices)
    assert 1 <= slow_blocks <= 3 and fast_blocks > 4 * slow_blocks, summary.devices  # the rule itself: above


def test_a_net_given_for_two_devices_of_one_kind_is_not_shared_between_threads(
        tmp_path: Path, volume_file: tuple[str, np.ndarray]) -> None:
    from znnx.volume import Placement, device_nets

    source, _ = volume_file
    net = znnx.compile(znnx.load(randomize(ValidUNet(3), 4), input_shape=(1, 28, 28, 28)), patch=(28, 28, 28))
    primary, helpers, _ = device_nets(net, source, str(tmp_path / "x.npy"), VolumeOptions(),
                                      Placement(device="cpu,cpu"))
    assert primary is net and helpers[0] is not net and helpers[0].input_shape == net.input_shape
    infer_volume(net, source, str(tmp_path / "two.npy"), device="cpu,cpu", quiet=True)
    infer_volume(net, source, str(tmp_path / "one.npy"), quiet=True)
    np.testing.assert_array_equal(np.load(tmp_path / "two.npy"), np.load(tmp_path / "one.npy"))
