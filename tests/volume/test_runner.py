"""Whole-volume runs: exact mode equals whole-volume PyTorch inference, runs resume after SIGKILL,
and bad inputs fail clearly without leaving half-written output trusted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import znnx
from tests.nets import SymmetricUNet, ValidUNet, randomize
from znnx.errors import InputError, StorageError
from znnx.report import geometry
from znnx.volume import VolumeOptions, infer_volume, storage
from znnx.volume.block import Box, tiling

ROOT = Path(__file__).resolve().parents[2]
VOLUME = (37, 29, 43)  # no block edge divides it


def _read(spec: str) -> np.ndarray:
    volume = storage.open_volume(spec)
    return volume.read((slice(None),) * len(volume.shape))


def _whole_volume(model: nn.Module, net: znnx.Net, x: np.ndarray) -> np.ndarray:
    """PyTorch on the whole volume, padded as the run pads it: valid nets get their context in zeros,
    same-padded nets zeros at the end up to a size they accept; cropped back to the volume."""
    t = tiling(geometry(net.graph))
    grow = [-(-max(v - q, 0) // a) * a for v, q, a in zip(x.shape, t.patch_out, t.downsampling)]
    size = [p + g for p, g in zip(t.patch_in, grow)]
    padded = np.zeros(size, np.float32)
    padded[tuple(slice(o, o + v) for o, v in zip(t.offset, x.shape))] = x
    with torch.no_grad():
        y = model(torch.from_numpy(padded)[None, None])[0].numpy()
    return y[(slice(None), *(slice(0, v) for v in x.shape))]


def random_zarr(folder: Path, shape: tuple[int, ...], chunks: tuple[int, ...], seed: int) -> tuple[str, np.ndarray]:
    """A float32 zarr array of uniform noise in `folder`, and its data."""
    import zarr

    data = np.random.default_rng(seed).random(shape).astype(np.float32)
    path = folder / "raw.zarr"
    zarr.create_array(store=str(path), data=data, chunks=chunks)
    return str(path), data


@pytest.fixture(scope="module")
def volume_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, np.ndarray]:
    return random_zarr(tmp_path_factory.mktemp("volume"), VOLUME, (16, 16, 16), 1)


@pytest.mark.parametrize(("name", "patches"), [
    ("valid", [(28, 28, 28), (30, 34, 32), (40, 36, 44)]),
    ("same", [(26, 26, 26), (28, 32, 36), (40, 40, 40)]),
])
def test_exact_mode_equals_whole_volume_inference(tmp_path: Path, volume_file: tuple[str, np.ndarray], name: str,
                                                  patches: list[tuple[int, int, int]]) -> None:
    source, data = volume_file
    model = randomize(ValidUNet(3) if name == "valid" else SymmetricUNet(3, levels=2), 0)
    graph = znnx.load(model, input_shape=(1, *patches[0]))
    for patch in patches:
        net = znnx.compile(graph, patch=patch)
        expected = _whole_volume(model, net, data)
        summary = infer_volume(net, source, str(tmp_path / f"{patch[1]}.zarr/pred"), quiet=True)
        assert summary.blocks > 1 and summary.computed == summary.blocks
        got = _read(str(tmp_path / f"{patch[1]}.zarr/pred"))
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max(), (name, patch)


def small_model(seed: int = 0) -> nn.Module:
    """A 2-level same-padded U-Net with all weights drawn from `seed` (the same in every process)."""
    torch.manual_seed(seed)
    return randomize(SymmetricUNet(3, levels=2), seed)


@pytest.fixture(scope="module")
def small_net() -> znnx.Net:
    return znnx.compile(znnx.load(small_model(), input_shape=(1, 28, 28, 28)))


def test_blend_mode_is_close_to_whole_volume_and_roi_masks_and_dtypes(
        tmp_path: Path, volume_file: tuple[str, np.ndarray], small_net: znnx.Net) -> None:
    source, data = volume_file
    expected = _whole_volume(small_model(), small_net, data)
    infer_volume(small_net, source, str(tmp_path / "b.zarr"), options=VolumeOptions(mode="blend"), quiet=True)
    blended = _read(str(tmp_path / "b.zarr"))
    assert np.abs(blended - expected).mean() < 0.02  # windows differ near their borders, by design
    roi = Box((5, 3, 10), (30, 20, 41))
    infer_volume(small_net, source, str(tmp_path / "r.zarr"), options=VolumeOptions(roi=roi, output_dtype="uint8"),
                 quiet=True)
    part = _read(str(tmp_path / "r.zarr"))
    assert part.dtype == np.uint8
    assert np.abs(part[(slice(None), *roi.slices())].astype(float) - expected[(slice(None), *roi.slices())] * 255
                  ).max() <= 0.5 + 1e-3
    outside = np.ones(part.shape[1:], bool)
    outside[roi.slices()] = False
    assert not part[:, outside].any()
    mask = np.zeros(VOLUME, np.uint8)
    mask[:8] = 1
    np.save(tmp_path / "mask.npy", mask)
    summary = infer_volume(small_net, source, str(tmp_path / "m.zarr"),
                           options=VolumeOptions(mask=str(tmp_path / "mask.npy")), quiet=True)
    assert 0 < summary.skipped < summary.blocks
    assert not _read(str(tmp_path / "m.zarr"))[:, 30:].any()
    np.save(tmp_path / "zeros.npy", np.zeros(VOLUME, np.uint8))
    summary = infer_volume(small_net, str(tmp_path / "zeros.npy"), str(tmp_path / "z.npy"),
                           options=VolumeOptions(background=0), quiet=True)
    assert summary.skipped == summary.blocks


def test_uint8_hdf5_input_normalized_explicitly(tmp_path: Path, volume_file: tuple[str, np.ndarray],
                                                small_net: znnx.Net) -> None:
    import h5py

    raw = np.rint(volume_file[1] * 255).astype(np.uint8)
    with h5py.File(tmp_path / "in.h5", "w") as handle:
        handle["raw"] = raw
    np.save(tmp_path / "float.npy", raw.astype(np.float32) / 255)
    infer_volume(small_net, f"{tmp_path / 'in.h5'}:/raw", str(tmp_path / "a.npy"),
                 options=VolumeOptions(scale=1 / 255), quiet=True)
    infer_volume(small_net, str(tmp_path / "float.npy"), str(tmp_path / "b.npy"), quiet=True)
    assert np.allclose(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"), atol=1e-6)


def test_bad_inputs_fail_clearly(tmp_path: Path, volume_file: tuple[str, np.ndarray], small_net: znnx.Net) -> None:
    source, _ = volume_file
    with pytest.raises(StorageError, match="does not exist"):
        infer_volume(small_net, str(tmp_path / "missing.zarr/raw"), str(tmp_path / "o.zarr"), quiet=True)
    np.save(tmp_path / "tiny.npy", np.zeros((1, 40, 40), np.float32))
    with pytest.raises(InputError, match=r"smaller than the smallest output this net computes \(2, 2, 2\)"):
        infer_volume(small_net, str(tmp_path / "tiny.npy"), str(tmp_path / "o.zarr"), quiet=True)
    np.save(tmp_path / "mask.npy", np.ones((5, 5, 5), np.uint8))
    with pytest.raises(InputError, match=r"mask .* has shape \(5, 5, 5\) but the input volume is \(37, 29, 43\)"):
        infer_volume(small_net, source, str(tmp_path / "o.zarr"),
                     options=VolumeOptions(mask=str(tmp_path / "mask.npy")), quiet=True)
    np.save(tmp_path / "two.npy", np.zeros((2, 30, 30, 30), np.float32))
    with pytest.raises(InputError, match=r"has shape \(2, 30, 30, 30\); this net takes 1 channel"):
        infer_volume(small_net, str(tmp_path / "two.npy"), str(tmp_path / "o.zarr"), quiet=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(StorageError, match="cannot create"):
        infer_volume(small_net, source, str(tmp_path / "file" / "o.zarr"), quiet=True)
    assert not (tmp_path / "file.znnx-ledger").exists() and not list(tmp_path.glob("*.znnx-ledger"))
    np.save(tmp_path / "exists.npy", np.zeros(3))
    with pytest.raises(StorageError, match=r"already exists and has no znnx ledger.*--overwrite"):
        infer_volume(small_net, source, str(tmp_path / "exists.npy"), quiet=True)


def test_a_failing_write_is_not_trusted_and_the_rerun_finishes(
        tmp_path: Path, volume_file: tuple[str, np.ndarray], small_net: znnx.Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, _ = volume_file
    out = str(tmp_path / "o.zarr")
    clean = infer_volume(small_net, source, str(tmp_path / "clean.zarr"), quiet=True)
    calls = {"n": 0}
    real = storage.Volume.write

    def full_disk(self: storage.Volume, index: tuple, data: np.ndarray) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise StorageError("storage: writing failed: [Errno 28] No space left on device")
        real(self, index, data)

    monkeypatch.setattr(storage.Volume, "write", full_disk)
    with pytest.raises(StorageError, match="No space left"):
        infer_volume(small_net, source, out, quiet=True)
    monkeypatch.setattr(storage.Volume, "write", real)
    summary = infer_volume(small_net, source, out, quiet=True)
    assert summary.resumed == 2 and summary.computed == clean.blocks - 2
    assert np.array_equal(_read(out), _read(str(tmp_path / "clean.zarr")))
    other = znnx.compile(znnx.load(small_model(1), input_shape=(1, 28, 28, 28)))
    (tmp_path / "o.zarr.znnx-ledger").write_text((tmp_path / "o.zarr.znnx-ledger").read_text().split("\n")[0] + "\n")
    with pytest.raises(StorageError, match=r"different run .* what differs: model"):
        infer_volume(other, source, out, quiet=True)


def test_sigkill_mid_run_then_rerun_recomputes_only_unfinished_blocks(
        tmp_path: Path, volume_file: tuple[str, np.ndarray], small_net: znnx.Net) -> None:
    source, _ = volume_file
    out = str(tmp_path / "killed.zarr/pred")
    ledger = tmp_path / "killed.zarr.pred.znnx-ledger"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ZNNX_TEST_BLOCK_DELAY": "0.25"}
    command = [sys.executable, "-m", "znnx", "infer", "tests.volume.test_runner:killable_net", source, out,
               "--patch", "28,28,28", "--input-shape", "1,28,28,28", "--quiet"]
    finished = kill_midway(command, env, ledger)
    assert finished >= 3
    rerun = subprocess.run(command, env={**env, "ZNNX_TEST_BLOCK_DELAY": "0"}, cwd=ROOT, capture_output=True,
                           text=True, check=True)
    summary = json.loads(rerun.stdout)
    assert summary["resumed"] >= finished and summary["resumed"] + summary["computed"] == summary["blocks"]
    assert summary["computed"] > 0
    clean = infer_volume(small_net, source, str(tmp_path / "clean.zarr/pred"), quiet=True)
    assert clean.blocks == summary["blocks"]
    # the command compiles its own plan: the autotuner may time another kernel fastest for a layer than
    # this process did (oneDNN or implicit GEMM for the first conv), a last-bit difference
    np.testing.assert_allclose(_read(out), _read(str(tmp_path / "clean.zarr/pred")), rtol=1e-5, atol=1e-6)


def kill_midway(command: list[str], env: dict[str, str], ledger: Path) -> int:
    """Start `command`, SIGKILL it once its ledger lists at least 3 finished blocks, and return how
    many the ledger lists then."""
    child = subprocess.Popen(command, env=env, cwd=ROOT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        if ledger.exists() and len(ledger.read_text().split("\n")) >= 5:
            break
        time.sleep(0.05)
    assert child.poll() is None, "the run finished before it could be killed"
    child.send_signal(signal.SIGKILL)
    child.wait()
    return len(ledger.read_text().split("\n")) - 2


def killable_net() -> nn.Module:
    """The test net for the SIGKILL test; ZNNX_TEST_BLOCK_DELAY slows each block's write so the run can
    be killed in the middle."""
    delay = float(os.environ.get("ZNNX_TEST_BLOCK_DELAY", "0"))
    if delay:
        import znnx.volume.runner as runner

        original = runner._to_output

        def slow(values: np.ndarray, dtype: str) -> np.ndarray:
            time.sleep(delay)
            return original(values, dtype)

        runner._to_output = slow
    return small_model()


def test_arrays_in_and_out(tmp_path: Path, volume_file: tuple[str, np.ndarray], small_net: znnx.Net) -> None:
    """A NumPy, zarr or Dask array as input; a path or a preallocated array as output."""
    source, data = volume_file
    infer_volume(small_net, source, str(tmp_path / "ref.npy"), quiet=True)
    expected = np.load(tmp_path / "ref.npy")
    summary = infer_volume(small_net, data, str(tmp_path / "from_numpy.npy"), quiet=True)
    assert "numpy array (37, 29, 43) float32" in summary.input
    np.testing.assert_array_equal(np.load(tmp_path / "from_numpy.npy"), expected)
    out = np.zeros((3, *VOLUME), np.float32)
    summary = infer_volume(small_net, data, out, quiet=True)
    assert summary.ledger == "" and summary.computed == summary.blocks
    np.testing.assert_array_equal(out, expected)
    import zarr

    infer_volume(small_net, zarr.open_array(source, mode="r"), out, quiet=True)
    np.testing.assert_array_equal(out, expected)
    da = pytest.importorskip("dask.array")
    infer_volume(small_net, da.from_array(data, chunks=16), out, quiet=True)
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(InputError, match=r"output array has shape \(3, 2, 2\).*np.zeros\(\(3, 37, 29, 43\)"):
        infer_volume(small_net, data, np.zeros((3, 2, 2), np.float32), quiet=True)
    with pytest.raises(StorageError, match="cannot read a dict as a volume"):
        infer_volume(small_net, {"not": "an array"}, out, quiet=True)


def test_only_image_dtypes_unless_converting(tmp_path: Path, small_net: znnx.Net) -> None:
    labels = np.random.default_rng(0).integers(0, 5, VOLUME).astype(np.int32)
    with pytest.raises(InputError, match=r"has dtype int32; znnx reads uint8, uint16 and floating point.*"
                                         r"--convert-input"):
        infer_volume(small_net, labels, str(tmp_path / "a.npy"), quiet=True)
    with pytest.raises(InputError, match="has dtype bool"):
        infer_volume(small_net, labels > 2, str(tmp_path / "a.npy"), quiet=True)
    infer_volume(small_net, labels, str(tmp_path / "a.npy"), options=VolumeOptions(convert_input=True), quiet=True)
    infer_volume(small_net, labels.astype(np.float32), str(tmp_path / "b.npy"), quiet=True)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    with pytest.raises(InputError, match="threads must be at least 1, got 0"):
        infer_volume(small_net, labels, str(tmp_path / "c.npy"), threads=0, quiet=True)


def test_nan_input_propagates_as_in_pytorch_and_is_counted(tmp_path: Path, volume_file: tuple[str, np.ndarray],
                                                           small_net: znnx.Net) -> None:
    _, data = volume_file
    dirty = data.copy()
    rng = np.random.default_rng(3)
    spots = tuple(rng.integers(0, v, 6) for v in VOLUME)
    dirty[spots] = np.nan
    dirty[3, 4, 5] = np.inf
    summary = infer_volume(small_net, dirty, str(tmp_path / "nan.npy"), quiet=True)
    assert summary.nonfinite_input_voxels == len({tuple(p) for p in np.stack(spots, 1)} | {(3, 4, 5)})
    got = np.load(tmp_path / "nan.npy")
    expected = _whole_volume(small_model(), small_net, dirty)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    assert np.isnan(got).sum() > 0
    finite = np.isfinite(expected)
    assert np.abs(got[finite] - expected[finite]).max() <= 1e-5 * np.abs(expected[finite]).max()


def test_an_explicit_patch_is_checked_against_memory_and_the_volume(tmp_path: Path,
                                                                    volume_file: tuple[str, np.ndarray]) -> None:
    source, _ = volume_file
    graph = znnx.load(small_model(), input_shape=(1, 28, 28, 28))
    began = time.perf_counter()
    with pytest.raises(InputError, match=r"compile: a patch of 384x384x384 needs .* more than the memory budget, "
                                         r"64.0 MiB; use a patch of at most (\d+)x\1x\1"):
        infer_volume(graph, np.zeros((512, 512, 512), np.uint8), str(tmp_path / "big.npy"), patch=(384, 384, 384),
                     memory_bytes=64 << 20, quiet=True)
    assert time.perf_counter() - began < 10
    assert not (tmp_path / "big.npy").exists()
    summary = infer_volume(graph, source, str(tmp_path / "small.npy"), patch=(512, 512, 512), quiet=True)
    assert any("reduced to" in note for note in summary.notes)
    assert max(summary.patch) < 100 and summary.computed == summary.blocks
