"""Dense volume runs (nets that pool, output at every voxel): blockwise equals whole-volume dense
output, automatic patches, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import znnx
from tests.volume.test_runner import ROOT, _read, kill_midway, random_zarr
from znnx.report import geometry
from znnx.volume import infer_volume
from znnx.volume.block import tiling

VOLUME = (21, 45, 38)


def pooling_model() -> nn.Module:
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv3d(1, 6, (2, 3, 3)), nn.ReLU(), nn.MaxPool3d((1, 2, 2)),
                          nn.Conv3d(6, 8, 3), nn.ReLU(), nn.MaxPool3d(2),
                          nn.Conv3d(8, 8, (1, 3, 2)), nn.ReLU(), nn.Conv3d(8, 2, 1), nn.Sigmoid())
    for p in model.parameters():
        nn.init.uniform_(p, -0.4, 0.4)
    return model.eval()


def pooling_graph() -> znnx.Graph:
    return znnx.load(pooling_model(), (1, 16, 30, 30))


@pytest.fixture(scope="module")
def volume_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, np.ndarray]:
    return random_zarr(tmp_path_factory.mktemp("dense"), VOLUME, (8, 16, 16), 7)


def whole_volume_dense(graph: znnx.Graph, data: np.ndarray, like: znnx.Net) -> np.ndarray:
    """The dense (dilated) net on the whole volume with the run's zero context, cropped to the volume."""
    t = tiling(geometry(like.graph))
    fov = geometry(like.graph).receptive_field
    padded = np.zeros(tuple(v + f - 1 for v, f in zip(data.shape, fov)), np.float32)
    padded[tuple(slice(o, o + v) for o, v in zip(t.offset, data.shape))] = data
    net = znnx.compile(graph, patch=padded.shape, dense="dilated", algorithm="direct")
    return net(padded[None])


@pytest.mark.parametrize(("dense", "patch"), [("mpf", (18, 37, 33)), ("dilated", (15, 33, 29)), (True, "auto")])
def test_blockwise_dense_equals_whole_volume_dense(tmp_path: Path, volume_file: tuple[str, np.ndarray],
                                                   dense: bool | str, patch: tuple[int, ...] | str) -> None:
    source, data = volume_file
    graph = pooling_graph()
    out = str(tmp_path / "dense.zarr/pred")
    summary = infer_volume(graph, source, out, patch=patch, quiet=True, dense=dense)
    assert summary.computed == summary.blocks and (summary.blocks > 1 or patch == "auto")
    assert any(note.startswith("dense:") for note in summary.notes)
    got = _read(out)
    like = znnx.compile(graph, patch=(18, 36, 36), dense="dilated", algorithm="direct")
    want = whole_volume_dense(graph, data, like)
    assert got.shape == want.shape == (2, *VOLUME)
    assert np.abs(got - want).max() <= 1e-5


def killable_pooling_model() -> nn.Module:
    from tests.volume.test_runner import killable_net

    killable_net()  # installs the slow write when ZNNX_TEST_BLOCK_DELAY is set
    return pooling_model()


def test_a_killed_dense_run_resumes_to_the_same_output(tmp_path: Path, volume_file: tuple[str, np.ndarray]) -> None:
    source, _ = volume_file
    out = str(tmp_path / "killed.zarr/pred")
    ledger = tmp_path / "killed.zarr.pred.znnx-ledger"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ZNNX_TEST_BLOCK_DELAY": "0.25"}
    command = [sys.executable, "-m", "znnx", "infer", "tests.volume.test_dense_volume:killable_pooling_model", source,
               out, "--patch", "18,37,33", "--input-shape", "1,16,30,30", "--dense", "mpf", "--quiet"]
    finished = kill_midway(command, env, ledger)
    rerun = subprocess.run(command, env={**env, "ZNNX_TEST_BLOCK_DELAY": "0"}, cwd=ROOT, capture_output=True,
                           text=True, check=True)
    summary = json.loads(rerun.stdout)
    assert summary["resumed"] >= finished and summary["resumed"] + summary["computed"] == summary["blocks"]
    clean = str(tmp_path / "clean.zarr/pred")
    infer_volume(pooling_graph(), source, clean, patch=(18, 37, 33), quiet=True, dense="mpf")
    assert np.array_equal(_read(out), _read(clean))
