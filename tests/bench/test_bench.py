"""Smoke test of `znnx bench` on tiny nets (untimed: it checks the machinery, never the speed)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from znnx.bench import cost, machine, report, runner
from znnx.bench.models import DENSE_NETS, NETS, USER_NETS, load_graph
from znnx.bench.worker import bench_input
from znnx.cli import main


def test_bench_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    args = ["bench", "--tiny", "--nets", "symmetric,pznet", "--peers", "pytorch-eager,torch.compile,onnxruntime,"
            "openvino,znnx", "--reps", "1", "--warmup", "0", "--sweep", "--out", str(tmp_path)]
    assert main(args) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    rows = results["results"]
    assert {(r["net"], r["peer"]) for r in rows} >= {("symmetric", "znnx"), ("pznet", "pytorch-eager")}
    for row in rows:
        assert row["ok"] or row["error"].startswith("absent"), row
        if row["ok"]:
            assert row["max_rel_error"] < runner.ERROR_FLAG and row["peak_rss_mib"] > 0
    assert any(r["layers"] for r in rows if r["peer"] == "znnx")
    assert {r["peer"] for r in results["sweep"]} >= {"znnx"}
    text = (tmp_path / "results.md").read_text()
    assert "## Side by side" in text and "## znnx per-layer breakdown" in text and "USD / gigavoxel" in text
    for plot in ("throughput.png", "patch_sweep.png"):
        assert (tmp_path / plot).stat().st_size > 10_000
    (tmp_path / "results.md").unlink()
    assert main(["bench", "--report-only", str(tmp_path / "results.json")]) == 0
    assert "extrapolated" in (tmp_path / "results.md").read_text()


def test_budget_extrapolation() -> None:
    points = [runner.Measurement("n", "p", (10, 10, 10), True, peak_rss_mib=1000.0 + 2.0 * v, output_shape=(1, 1))
              for v in (1000, 2000)]
    points = [dataclasses.replace(m, patch=(v, 1, 1)) for m, v in zip(points, (1000, 2000))]
    assert math.isclose(report.budget_limit(points, 5000.0) or 0.0, 2000.0)
    assert report.budget_limit(points[:1], 5000.0) is None


def test_error_flag_and_absent_rows() -> None:
    settings = runner.Settings(reps=1)
    flagged = runner.Measurement("n", "x", (4, 4, 4), True, 0.5, (0.5,), (1, 3, 4, 4, 4), 100.0, 1.0, "", 2e-4)
    absent = runner.Measurement("n", "y", (4, 4, 4), False, error="absent (not installed: pip install y)")
    lines = report.side_by_side_table([flagged, absent], settings)
    assert "flagged" in lines[2] and "absent" in lines[3]
    assert flagged.voxels_per_s == 64 / 0.5


def test_cost_model() -> None:
    prices = cost.load_prices()
    assert prices.instances and prices.read_on
    assert math.isclose(cost.usd_per_gigavoxel(3.6, 1e6), 1.0)
    cpu = next(i for i in prices.instances if i.kind == "cpu")
    assert cost.cpu_throughput(cpu, 2e6, 2) == 1e6 * cpu.vcpus
    gpu = next(i for i in prices.instances if i.kind == "gpu")
    assert cost.gpu_throughput(gpu, {}) is None


def test_machine_and_models() -> None:
    described = machine.describe()
    assert described["torch"] != "absent" and described["cores"]
    assert set(NETS) == {"original", "symmetric", "residual", "pznet", *DENSE_NETS, *USER_NETS}
    assert NETS["original"].patch == (116, 132, 132)


def test_rounds_take_turns_and_pool_the_timed_runs() -> None:
    lines: list[str] = []
    settings = runner.Settings(warmup=0, reps=1, tiny=True, rounds=2)
    eager, znnx = runner.measure(["symmetric"], ["znnx"], settings, progress=lines.append)
    assert len(eager.times) == 1 and len(znnx.times) == 2
    assert math.isclose(znnx.median_s, sum(znnx.times) / 2)
    assert znnx.max_rel_error < runner.ERROR_FLAG
    assert [line.split()[1] for line in lines if "round" in line] == ["pytorch-eager", "znnx", "znnx"]


@pytest.mark.parametrize("name", sorted(USER_NETS))
def test_user_style_nets_run_in_znnx_as_in_pytorch(name: str) -> None:
    """The nets shaped like users' (narrow, pooling and upsampling of every kind, 1-4 input channels)
    compile and match PyTorch on their tiny patches."""
    import numpy as np
    import torch

    import znnx

    spec = USER_NETS[name]
    x = bench_input(spec.tiny_patch, spec.channels)
    model = spec.build(True, spec.tiny_patch)
    with torch.inference_mode():
        want = model(torch.from_numpy(x)).numpy()
    got = znnx.compile(load_graph(model, x))(x)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))
