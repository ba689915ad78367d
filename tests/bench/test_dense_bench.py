"""Smoke test of the dense benchmark on tiny sliding-window nets (the machinery, never the speed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

import znnx
from znnx.bench import dense, runner
from znnx.bench.sliding import ZNNI, ZNNI_FIELD_OF_VIEW, n4_net, znni_net
from znnx.report import geometry


def test_znni_nets_have_the_published_fields_of_view_and_their_dense_forward_is_znnx_dense() -> None:
    for name, fov in ZNNI_FIELD_OF_VIEW.items():
        graph = znnx.load(znni_net(name, tiny=True).classifier(), (1, fov, fov, fov))
        assert geometry(graph).receptive_field == (fov, fov, fov), name
        assert graph.types[graph.outputs[0]].spatial == (1, 1, 1) and graph.types[graph.outputs[0]].channels == 3
    assert set(ZNNI) == set(ZNNI_FIELD_OF_VIEW)
    model = n4_net(tiny=True)
    x = np.random.default_rng(0).random((1, 1, 1, 126, 126), dtype=np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    net = znnx.compile(znnx.load(model.classifier(), (1, 1, 126, 126)), patch=(1, 126, 126), dense="mpf")
    got = net(x)
    assert got.shape == want.shape == (1, 2, 1, 32, 32)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_dense_bench_smoke(tmp_path: Path) -> None:
    assert dense.main(["--tiny", "--nets", "n337", "n4", "--reps", "1", "--peers", "znnx", "znnx-dilated",
                       "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "dense.json").read_text())
    assert [r["net"] for r in rows] == ["n337", "n4"]
    for row in rows:
        assert set(row["voxels_per_s"]) == {"pytorch-eager", "znnx", "znnx-dilated"} and not row["errors"]
        assert all(e < runner.ERROR_FLAG for p, e in row["max_rel_error"].items() if p != "pytorch-eager")
        assert row["per_core_over_znni"] > 0 or row["net"] == "n4"
    text = (tmp_path / "dense.md").read_text()
    assert "| n337 |" in text and "ZNNi per core" in text
