"""The hybrid benchmark's smoke path (CPU device lists): both runs finish, agree exactly, and say on
stderr what they are doing as they go."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from znnx.bench import hybrid


def test_hybrid_benchmark_compares_device_lists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hybrid.main(["--tiny", "--size", "80", "--memory", "200MiB", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [r["devices"] for r in rows] == ["cpu", "cpu,cpu"]
    assert all(r["max_difference"] <= 1e-5 and r["voxels_per_s"] > 0 for r in rows)
    assert len(rows[1]["blocks"]) == 2
    assert "| cpu,cpu |" in (tmp_path / "results.md").read_text()
    progress = capsys.readouterr().err
    for devices in ("[1/2] cpu", "[2/2] cpu,cpu"):
        steps = ("building the nets", "warm-up run", "timed run")
        assert all(f"hybrid {devices}: {step}" in progress for step in steps)
    assert progress.count(" blocks  ") >= 4 and "ETA" in progress  # each run's own progress lines
