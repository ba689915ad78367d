"""The hybrid benchmark's smoke path (CPU device lists): both runs finish and agree exactly."""

from __future__ import annotations

import json
from pathlib import Path

from znnx.bench import hybrid


def test_hybrid_benchmark_compares_device_lists(tmp_path: Path) -> None:
    hybrid.main(["--tiny", "--size", "80", "--memory", "200MiB", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [r["devices"] for r in rows] == ["cpu", "cpu,cpu"]
    assert all(r["max_difference"] <= 1e-5 and r["voxels_per_s"] > 0 for r in rows)
    assert len(rows[1]["blocks"]) == 2
    assert "| cpu,cpu |" in (tmp_path / "results.md").read_text()
