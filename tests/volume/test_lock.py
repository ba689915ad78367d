"""One writer per output: a second run on a locked output is refused at once naming the holder, a
lock left by a killed process is taken over, and the ledger keeps every block once."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from znnx.errors import StorageError
from znnx.volume.ledger import Ledger
from znnx.volume.lock import OutputLock

HOLD_AND_WAIT = """
import sys, time
from pathlib import Path
from znnx.volume.lock import OutputLock
OutputLock.acquire(Path(sys.argv[1]), "out")
print("held", flush=True)
time.sleep(600)
"""
HOLD_AND_DIE = """
import os, signal, sys
from pathlib import Path
from znnx.volume.lock import OutputLock
OutputLock.acquire(Path(sys.argv[1]), "out")
os.kill(os.getpid(), signal.SIGKILL)
"""


@contextmanager
def held_elsewhere(path: Path) -> Iterator[subprocess.Popen[str]]:
    """The lock at `path` held by another process for the duration."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_AND_WAIT, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def test_a_held_lock_refuses_a_second_writer_naming_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "out.zarr.znnx-lock"
    with held_elsewhere(path) as holder, pytest.raises(
            StorageError, match=rf"being written by process {holder.pid} on host {socket.gethostname()}.*wait for"):
        OutputLock.acquire(path, "out.zarr")
    taken = OutputLock.acquire(path, "out.zarr")  # the killed holder's lock is free again
    taken.release()


def test_the_lock_nests_within_one_process(tmp_path: Path) -> None:
    path = tmp_path / "out.zarr.znnx-lock"
    outer = OutputLock.acquire(path, "out.zarr")
    inner = OutputLock.acquire(path, "out.zarr")
    inner.release()
    assert path.exists()
    outer.release()
    assert not path.exists()


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "out.zarr.znnx-lock"
    done = subprocess.run([sys.executable, "-c", HOLD_AND_DIE, str(path)], timeout=120)
    assert done.returncode == -9 and path.exists()
    taken = OutputLock.acquire(path, "out.zarr")
    note = taken.note()
    assert note is not None and "took over the lock of process" in note
    taken.release()


def test_a_torn_ledger_line_is_cut_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "ledger"
    ledger = Ledger.open(path, "key", {"a": 1}, 100)
    for index in (3, 17):
        ledger.finish(index)
    ledger.close()
    with path.open("a") as handle:
        handle.write("4")  # killed mid-line: "42\n" became "4"
    resumed = Ledger.open(path, "key", {"a": 1}, 100)
    assert resumed.done == {3, 17}
    resumed.finish(42)
    resumed.close()
    assert Ledger.read(path)[1] == {3, 17, 42}
    assert path.read_text().splitlines()[1:] == ["3", "17", "42"]


def test_a_finished_run_of_another_model_is_not_called_unfinished(tmp_path: Path) -> None:
    path = tmp_path / "ledger"
    ledger = Ledger.open(path, "key", {"model": "a"}, 1)
    ledger.finish(0)
    ledger.close()
    with pytest.raises(StorageError, match="holds the finished output of a different run") as error:
        Ledger.open(path, "other", {"model": "b"}, 1)
    assert "Rerun the original command" not in str(error.value)


def test_infer_volume_refuses_an_output_another_run_is_writing(tmp_path: Path) -> None:
    import numpy as np

    import znnx
    from tests.volume.test_runner import small_model
    from znnx.volume import infer_volume, storage

    net = znnx.compile(znnx.load(small_model(), input_shape=(1, 28, 28, 28)))
    output = str(tmp_path / "out.zarr/p")
    with held_elsewhere(storage.lock_path(storage.parse(output))) as holder, pytest.raises(
            StorageError, match=f"being written by process {holder.pid}"):
        infer_volume(net, np.zeros((30, 30, 30), np.float32), output, quiet=True)
    assert not (tmp_path / "out.zarr").exists()
    assert infer_volume(net, np.zeros((30, 30, 30), np.float32), output, quiet=True).computed > 0
    assert not storage.lock_path(storage.parse(output)).exists()
