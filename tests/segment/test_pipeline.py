"""Segmentation end to end: chunked runs equal the in-memory run for any chunk size, score and
input kind, on the local runner and on Dask, after a SIGKILL and a rerun; the CLI, the hierarchy
and errors."""

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

from znnx.cli import main
from znnx.errors import InputError, StorageError
from znnx.segment import Hierarchy, SegmentOptions, segment, segment_array
from znnx.segment.pipeline import read_affinities
from znnx.segment.synthetic import affinities, cells, noisy
from znnx.volume import storage

ROOT = Path(__file__).resolve().parents[2]


def _read(spec: str) -> np.ndarray:
    return storage.open_volume(spec).read((slice(None),) * 3)


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, np.ndarray, np.ndarray]:
    """A synthetic affinity volume (quantized, so with plateaus and ties) and its ground truth."""
    truth = cells((26, 30, 23), 7, seed=4)
    aff = noisy(affinities(truth), 0.45, seed=4)
    aff = (np.round(aff * 12) / 12).astype(np.float32)
    path = tmp_path_factory.mktemp("segment") / "aff.npy"
    np.save(path, aff)
    return str(path), aff, truth


@pytest.mark.parametrize(("chunk", "score", "threshold"), [((8, 8, 8), "mean", 0.4), ((5, 9, 7), "mean", 0.4),
                                                           ((13, 30, 6), "median", 0.4), ((7, 7, 7), "max", 0.9)])
def test_chunked_equals_in_memory(tmp_path: Path, volume: tuple[str, np.ndarray, np.ndarray],
                                  chunk: tuple[int, int, int], score: str, threshold: float) -> None:
    source, aff, _ = volume
    options = SegmentOptions(size=40, score=score, threshold=threshold)
    expected, tree, _ = segment_array(aff, options)
    summary = segment(source, str(tmp_path / "seg.zarr"), options, chunk=chunk, hierarchy=str(tmp_path / "h.npz"))
    assert np.array_equal(_read(str(tmp_path / "seg.zarr")), expected)
    assert len(np.unique(expected)) > 5
    chunked = Hierarchy.load(tmp_path / "h.npz")
    assert summary.merges == len(chunked.a) == len(tree.a)
    assert set(summary.steps) >= {"basins", "graph", "linkage", "agglomerate", "write"}
    assert not (tmp_path / "seg.zarr.znnx-segment").exists()  # the work folder goes once the run is done


def test_segmentation_recovers_the_ground_truth(volume: tuple[str, np.ndarray, np.ndarray]) -> None:
    from znnx.segment import adapted_rand_error, variation_of_information

    _, aff, truth = volume
    labels, _, basins = segment_array(aff, SegmentOptions(size=40, threshold=0.5))
    assert adapted_rand_error(labels, truth) < 0.1 < adapted_rand_error(basins, truth)
    assert variation_of_information(labels, truth).total < variation_of_information(basins, truth).total


def test_the_hierarchy_cuts_at_a_higher_threshold(volume: tuple[str, np.ndarray, np.ndarray]) -> None:
    _, aff, _ = volume
    low, tree, basins = segment_array(aff, SegmentOptions(size=40, threshold=0.3))
    high, _, _ = segment_array(aff, SegmentOptions(size=40, threshold=0.55))
    assert np.array_equal(tree.relabel(basins, 0.3), low)
    assert np.array_equal(tree.relabel(basins, 0.55), high)
    with pytest.raises(InputError, match=r"down to 0\.3"):
        tree.cut(0.2)


def test_a_boundary_map_is_segmented_as_its_affinities(tmp_path: Path) -> None:
    boundary = np.random.default_rng(0).random((12, 14, 11)).astype(np.float32)
    np.save(tmp_path / "boundary.npy", boundary)
    aff = read_affinities(storage.open_volume(str(tmp_path / "boundary.npy")), (slice(None),) * 3)
    assert aff.shape == (3, 12, 14, 11)
    assert aff[0, 3, 4, 5] == pytest.approx(1 - max(boundary[3, 4, 5], boundary[2, 4, 5]))
    expected, _, _ = segment_array(aff, SegmentOptions(size=5))
    segment(str(tmp_path / "boundary.npy"), str(tmp_path / "a.zarr"), SegmentOptions(size=5), chunk=(5, 5, 5))
    assert np.array_equal(_read(str(tmp_path / "a.zarr")), expected)


def test_a_uint8_affinity_volume_is_scaled(tmp_path: Path, volume: tuple[str, np.ndarray, np.ndarray]) -> None:
    _, aff, _ = volume
    np.save(tmp_path / "aff8.npy", np.round(aff * 255).astype(np.uint8))
    expected, _, _ = segment_array(np.round(aff * 255).astype(np.float32) / 255)
    segment(str(tmp_path / "aff8.npy"), str(tmp_path / "s.zarr"))
    assert np.array_equal(_read(str(tmp_path / "s.zarr")), expected)


def test_on_dask_with_two_workers(tmp_path: Path, volume: tuple[str, np.ndarray, np.ndarray]) -> None:
    pytest.importorskip("distributed")
    source, aff, _ = volume
    expected, _, _ = segment_array(aff)
    segment(source, str(tmp_path / "d.zarr"), chunk=(9, 10, 8), cluster="local:2")
    assert np.array_equal(_read(str(tmp_path / "d.zarr")), expected)


def test_local_worker_processes(tmp_path: Path, volume: tuple[str, np.ndarray, np.ndarray]) -> None:
    source, aff, _ = volume
    expected, _, _ = segment_array(aff)
    segment(source, str(tmp_path / "w.zarr"), chunk=(6, 8, 7), workers=2)
    assert np.array_equal(_read(str(tmp_path / "w.zarr")), expected)


SLOW_ROUNDS = """
import sys, time
import znnx.segment.pipeline as pipeline
original = pipeline.round_task
def slow(*args):
    time.sleep(0.02)
    original(*args)
pipeline.round_task = slow
from znnx.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_killed_run_resumes_to_the_same_result(tmp_path: Path, volume: tuple[str, np.ndarray, np.ndarray]) -> None:
    source, aff, _ = volume
    expected, _, _ = segment_array(aff)
    output = tmp_path / "k.zarr"
    command = [sys.executable, "-c", SLOW_ROUNDS, "segment", source, str(output), "--chunk", "5,5,5", "--quiet"]
    env = os.environ | {"PYTHONPATH": str(ROOT / "src")}
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    rounds = tmp_path / "k.zarr.znnx-segment" / "linkage" / "0"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None and len(list(rounds.glob("*.npz"))) < 10:
        time.sleep(0.01)
    assert child.poll() is None, "the run finished before it could be killed"
    child.send_signal(signal.SIGKILL)
    child.wait()
    done = len(list(rounds.glob("*.npz")))
    assert 10 <= done < 6 * 6 * 5
    rerun = subprocess.run([*command[:2], SLOW_ROUNDS.replace("0.02", "0"), *command[3:]], env=env,
                           capture_output=True, text=True, check=True)
    assert json.loads(rerun.stdout)["merges"] > 0
    assert np.array_equal(_read(str(output)), expected)


def test_a_work_folder_of_another_run_is_refused(tmp_path: Path, volume: tuple[str, np.ndarray, np.ndarray]) -> None:
    source, _, _ = volume
    work = tmp_path / "o.zarr.znnx-segment"
    work.mkdir()
    (work / "job.json").write_text("{}")
    with pytest.raises(StorageError, match="another segmentation"):
        segment(source, str(tmp_path / "o.zarr"), chunk=(8, 8, 8))


def test_bad_inputs_are_named(tmp_path: Path) -> None:
    np.save(tmp_path / "two.npy", np.zeros((2, 4, 4, 4), np.float32))
    with pytest.raises(InputError, match=r"shape \(2, 4, 4, 4\)"):
        segment(str(tmp_path / "two.npy"), str(tmp_path / "x.zarr"))
    with pytest.raises(InputError, match="score must be one of"):
        segment_array(np.zeros((3, 4, 4, 4), np.float32), SegmentOptions(score="mode"))
    with pytest.raises(InputError, match="low < high"):
        SegmentOptions(low=0.5, high=0.5).check()


def test_cli_segment_writes_labels_hierarchy_and_fragments(tmp_path: Path, volume: tuple[str, np.ndarray, np.ndarray],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    source, aff, _ = volume
    args = ["segment", source, str(tmp_path / "seg.zarr"), "--hierarchy", str(tmp_path / "h.npz"), "--fragments",
            str(tmp_path / "frag.zarr"), "--size", "40", "--threshold", "0.4", "--chunk", "10,10,10", "--quiet"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["shape"] == list(aff.shape[1:]) and report["voxels_per_s"] > 0
    expected, _, basins = segment_array(aff, SegmentOptions(size=40, threshold=0.4))
    labels = _read(str(tmp_path / "seg.zarr"))
    assert labels.dtype == np.uint64 and np.array_equal(labels, expected)
    assert np.array_equal(_read(str(tmp_path / "frag.zarr")), basins)
    tree = Hierarchy.load(tmp_path / "h.npz")
    assert np.array_equal(tree.relabel(basins, 0.4), expected)
