"""Backends are found through one registry and share one protocol: a third backend (PyTorch eager,
tests/backends/eager_backend.py) registered in one line runs the standard nets through `compile`
and `infer_volume`; outside backends/ nothing asks which device it is on."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import znnx
from tests.backends import eager_backend
from tests.nets import Case, cases, rel_error
from znnx import backends
from znnx.errors import DeviceError
from znnx.volume import VolumeOptions, storage

SOURCE = Path(__file__).resolve().parents[2] / "src" / "znnx"


@pytest.fixture
def eager() -> Iterator[str]:
    backends.register(eager_backend.KIND, eager_backend)
    yield eager_backend.KIND
    backends.unregister(eager_backend.KIND)


@pytest.mark.parametrize("case", cases(), ids=str)
def test_standard_nets_compile_and_run_on_a_registered_backend(eager: str, case: Case) -> None:
    model = case.build()
    graph = znnx.load(model, case.input_shape)
    net = znnx.compile(graph, device=eager)
    assert net.device == eager and net.plan.device == eager and net.plan.machine == "eager: any CPU"
    x = np.random.default_rng(0).standard_normal(case.input_shape).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)[None])[0].numpy()
    assert rel_error(net(x), expected) < 1e-5


@pytest.mark.parametrize("case", [c for c in cases() if c.name.endswith("_0")], ids=str)
def test_infer_volume_on_a_registered_backend_equals_the_cpu_backend(eager: str, case: Case, tmp_path: Path) -> None:
    """Blend mode: any patch tiles any net (exact mode wants patches far larger than the margin a
    same-padded net spoils, which would make these volumes large)."""
    graph = znnx.load(case.build(), case.input_shape)
    channels, *patch = case.input_shape
    spatial = tuple(3 * p for p in patch)
    everything = (slice(None),) * (1 + len(spatial))
    volume = np.random.default_rng(1).random((channels, *spatial)).astype(np.float32)
    source = str(tmp_path / "in.zarr/raw")
    storage.create_volume(source, volume.shape, "float32", volume.shape).write(everything, volume)
    options = VolumeOptions(mode="blend", overlap=(0.25,) * len(spatial))
    summary = znnx.infer_volume(graph, source, str(tmp_path / "out.zarr/p"), patch, options, device=eager, quiet=True)
    assert summary.computed == summary.blocks
    cpu_summary = znnx.infer_volume(graph, source, str(tmp_path / "cpu.zarr/p"), patch, options, quiet=True)
    got = storage.open_volume(str(tmp_path / "out.zarr/p")).read(everything)
    want = storage.open_volume(str(tmp_path / "cpu.zarr/p")).read(everything)
    assert cpu_summary.patch == summary.patch
    assert rel_error(got, want) < 1e-5


def test_unknown_kinds_and_devices_are_named(eager: str) -> None:
    with pytest.raises(DeviceError, match=r"unknown device 'tpu:0'.*known device kinds: \['cpu', 'cuda', 'eager'\]"):
        znnx.compile(znnx.load("src/znnx/data/demo_unet.onnx"), device="tpu:0")
    with pytest.raises(DeviceError, match="eager backend: unknown device 'eager:3'"):
        backends.resolve("eager:3")


def test_nothing_outside_backends_branches_on_the_device_type() -> None:
    pattern = re.compile(r"""\.type\s*[!=]=|[!=]=\s*["'](cpu|cuda)["']|["'](cpu|cuda)["']\s*[!=]=""")
    found = [f"{path.relative_to(SOURCE)}:{i}: {line.strip()}"
             for path in SOURCE.rglob("*.py") if not path.is_relative_to(SOURCE / "backends")
             and not path.is_relative_to(SOURCE / "bench")
             for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not found, "\n".join(found)
