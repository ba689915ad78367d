"""Volume runs on a Dask LocalCluster (loopback only): the output equals the local runner's exactly,
a worker killed mid-block is survived and its blocks are reported as retried, and a client killed
mid-run resumes from the ledger."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import znnx
from tests.volume.test_runner import ROOT, _read, kill_midway, small_model
from znnx.errors import ClusterError, StorageError
from znnx.volume import VolumeOptions, infer_volume
from znnx.volume.block import Block

pytest.importorskip("distributed")

from distributed import Client

from znnx.volume.dask_runner import connect

VOLUME = (45, 38, 51)
PATCH = (36, 36, 36)  # 36 blocks of 16^3 (the margin is 10)


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with connect("local:2") as client:
        yield client


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> str:
    import zarr

    path = tmp_path_factory.mktemp("dask") / "raw.zarr"
    zarr.create_array(store=str(path), data=np.random.default_rng(2).random(VOLUME).astype(np.float32),
                      chunks=(16, 16, 16))
    return str(path)


@pytest.fixture(scope="module")
def net() -> znnx.Net:
    return znnx.compile(znnx.load(small_model(), input_shape=(1, *PATCH)))


@pytest.fixture(scope="module")
def local_output(tmp_path_factory: pytest.TempPathFactory, source: str, net: znnx.Net) -> np.ndarray:
    """The local runner's output, computed with the workers' single compute thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = str(tmp_path_factory.mktemp("local") / "out.zarr/pred")
        infer_volume(net, source, out, quiet=True)
    finally:
        torch.set_num_threads(threads)
    return _read(out)


def _slow_compute(delay: float) -> Callable[[], None]:
    """A function for `client.run` that makes each block's compute on a worker take `delay` longer
    (0 restores it); nested, so Dask ships it by value."""

    def patch() -> None:
        from znnx.volume import runner

        original = runner.BlockJob.__dict__.get("unslowed", runner.BlockJob.compute)

        def slow(self: runner.BlockJob, block: Block, patches: list[np.ndarray]) -> np.ndarray:
            time.sleep(delay)
            return original(self, block, patches)

        runner.BlockJob.unslowed = original  # type: ignore[attr-defined]
        runner.BlockJob.compute = slow if delay else original  # type: ignore[method-assign]

    return patch


def test_two_workers_write_the_local_runners_output_exactly(
        tmp_path: Path, client: Client, source: str, net: znnx.Net, local_output: np.ndarray) -> None:
    client.run(_slow_compute(0))
    out = str(tmp_path / "out.zarr/pred")
    summary = infer_volume(net, source, out, quiet=True, client=client, threads=1)
    assert summary.workers == 2 and summary.computed == summary.blocks > 2 and summary.retried == 0
    assert np.array_equal(_read(out), local_output)
    assert not (tmp_path / "out.zarr.pred.znnx-net").exists()  # the workers' network file is removed
    again = infer_volume(net, source, out, quiet=True, client=client, threads=1)
    assert again.resumed == again.blocks and again.computed == 0


def test_a_worker_killed_mid_block_is_survived_and_its_blocks_reported_retried(
        tmp_path: Path, client: Client, source: str, net: znnx.Net, local_output: np.ndarray) -> None:
    client.run(_slow_compute(0.5))
    pids = client.run(os.getpid)
    killed: list[int] = []

    def kill_once(block: Block) -> None:
        if not killed:
            time.sleep(0.2)  # both workers are now inside a block's compute
            killed.append(next(iter(pids.values())))
            os.kill(killed[0], signal.SIGKILL)

    from znnx.volume.dask_runner import run_volume_dask

    out = str(tmp_path / "out.zarr/pred")
    summary = run_volume_dask(net, source, out, client, threads=1, quiet=True, on_block=kill_once)
    assert killed and summary.retried >= 1 and summary.computed == summary.blocks
    assert np.array_equal(_read(out), local_output)
    client.run(_slow_compute(0))


def test_a_client_killed_mid_run_is_resumed_by_the_same_command(
        tmp_path: Path, client: Client, source: str, local_output: np.ndarray) -> None:
    client.wait_for_workers(2)
    client.run(_slow_compute(0.3))
    out = str(tmp_path / "out.zarr/pred")
    ledger = tmp_path / "out.zarr.pred.znnx-ledger"
    command = [sys.executable, "-m", "znnx", "infer", "tests.volume.test_runner:small_model", source, out,
               "--patch", ",".join(map(str, PATCH)), "--input-shape", f"1,{','.join(map(str, PATCH))}",
               "--cluster", client.scheduler.address, "--threads", "1", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    finished = kill_midway(command, env, ledger)
    client.run(_slow_compute(0))
    rerun = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    summary = json.loads(rerun.stdout)
    assert summary["resumed"] >= finished >= 3 and summary["computed"] > 0
    assert summary["resumed"] + summary["computed"] == summary["blocks"]
    # the command compiles its own plan at one thread: the autotuner may time another kernel fastest for
    # a layer than the fixture's did (oneDNN or implicit GEMM for the first conv), a last-bit difference
    np.testing.assert_allclose(_read(out), local_output, rtol=1e-5, atol=1e-6)


def test_refuses_hdf5_output_and_bad_cluster_specs(tmp_path: Path, client: Client, source: str,
                                                    net: znnx.Net) -> None:
    with pytest.raises(StorageError, match=r"several processes at once.*write zarr"):
        infer_volume(net, source, f"{tmp_path}/out.h5:/pred", quiet=True, client=client)
    for spec in ("local:0", "local:two", "somewhere"):
        with pytest.raises(ClusterError, match="must be local:N"), connect(spec):
            pass


def test_blend_mode_and_auto_patch_run_on_the_cluster(tmp_path: Path, client: Client,
                                                      source: str) -> None:
    graph = znnx.load(small_model(), input_shape=(1, *PATCH))
    out = str(tmp_path / "out.zarr/pred")
    summary = infer_volume(graph, source, out, "auto", VolumeOptions(mode="blend"), quiet=True, client=client,
                           threads=1)
    assert summary.notes[0].startswith("autopatch (cpu): patch ") and summary.computed == summary.blocks
    local = str(tmp_path / "local.zarr/pred")
    infer_volume(znnx.compile(graph, patch=summary.patch), source, local, options=VolumeOptions(mode="blend"),
                 quiet=True)
    assert np.allclose(_read(out), _read(local), atol=1e-5)


def test_cli_starts_a_local_cluster_and_reports_workers(tmp_path: Path, source: str,
                                                         local_output: np.ndarray) -> None:
    out = str(tmp_path / "cli.zarr/pred")
    command = [sys.executable, "-m", "znnx", "infer", "tests.volume.test_runner:small_model", source, out,
               "--patch", ",".join(map(str, PATCH)), "--input-shape", f"1,{','.join(map(str, PATCH))}",
               "--cluster", "local:2", "--threads", "1", "--quiet"]
    done = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, capture_output=True,
                          text=True, check=True)
    summary = json.loads(done.stdout)
    assert summary["computed"] == summary["blocks"] and summary["workers"] >= 1
    np.testing.assert_allclose(_read(out), local_output, rtol=1e-5, atol=1e-6)  # its own plan, as above


def test_workers_run_the_saved_plan_without_tuning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client measured the convs; its workers load the network file's plan and time nothing
    (their tuning cache stays empty) and compute what the local runner computes."""
    from tests.passes.graphs import builder, conv
    from znnx.passes import optimize

    monkeypatch.setenv("ZNNX_CACHE_DIR", str(tmp_path / "client-cache"))
    b, x = builder(channels=16, spatial=(8, 12, 12))
    graph = optimize(b.finish([conv(b, b.add("relu", [conv(b, x, 16, pads=(0,) * 6)]), 2, pads=(0,) * 6)])).graph
    net = znnx.compile(graph)
    assert any(c.source == "measured" for c in net.algorithms)
    volume = np.random.default_rng(4).random((16, 12, 20, 18)).astype(np.float32)
    np.save(tmp_path / "raw.npy", volume)
    infer_volume(net, str(tmp_path / "raw.npy"), str(tmp_path / "local.npy"), quiet=True)
    monkeypatch.setenv("ZNNX_CACHE_DIR", str(tmp_path / "worker-cache"))
    with connect("local:2") as two_workers:
        summary = infer_volume(net, str(tmp_path / "raw.npy"), str(tmp_path / "dask.npy"), client=two_workers,
                               threads=1, quiet=True)
    assert summary.computed == summary.blocks > 1
    assert not (tmp_path / "worker-cache" / "autotune.json").exists()
    np.testing.assert_allclose(np.load(tmp_path / "dask.npy"), np.load(tmp_path / "local.npy"), atol=1e-5)
