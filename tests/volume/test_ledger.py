"""The ledger lists only finished blocks, survives a torn last line and refuses another run."""

from __future__ import annotations

from pathlib import Path

import pytest

from znnx.errors import StorageError
from znnx.volume.ledger import Ledger, run_key


def test_resume_ignores_a_torn_line_and_refuses_a_different_run(tmp_path: Path) -> None:
    path = tmp_path / "out.znnx-ledger"
    run = {"model": "abc", "patch": [8, 8, 8]}
    ledger = Ledger.open(path, run_key(run), run, 10)
    ledger.finish(3)
    ledger.finish(7)
    ledger.close()
    with path.open("a") as handle:
        handle.write("9")  # a crash in the middle of appending
    resumed = Ledger.open(path, run_key(run), run, 10)
    assert resumed.done == {3, 7}
    resumed.close()
    other = {"model": "abc", "patch": [16, 16, 16]}
    with pytest.raises(StorageError, match=r"different run .* what differs: patch. Rerun the original command"):
        Ledger.open(path, run_key(other), other, 10)


def test_a_foreign_file_is_not_a_ledger(tmp_path: Path) -> None:
    path = tmp_path / "x.znnx-ledger"
    path.write_text("hello\n")
    with pytest.raises(StorageError, match="no readable header"):
        Ledger.read(path)
