"""The pass pipeline on the benchmark U-Nets (narrow widths): what must be gone, and same numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import znnx
from tests.nets import rel_error
from znnx.bench.models import NETS
from znnx.ir.ops import ACTIVATIONS
from znnx.passes import optimize

PATCHES = {"original": (100, 100, 100), "symmetric": (16, 32, 32), "residual": (4, 32, 32)}


@pytest.mark.parametrize("name", sorted(PATCHES))
def test_benchmark_unets_are_fully_fused(name: str) -> None:
    model = NETS[name].build(True, PATCHES[name]).eval()
    x = np.random.default_rng(0).standard_normal((1, 1, *PATCHES[name])).astype(np.float32)
    graph = znnx.load(model, x.shape[1:])
    optimized = optimize(graph)
    after = optimized.graph
    assert not [n for n in after.nodes if n.op in ("batchnorm", "scale")]
    producers = {n.output: n for n in after.nodes}
    assert not [n.name for n in after.nodes
                if n.op in ACTIVATIONS and producers.get(n.inputs[0], n).op in ("conv", "conv_transpose")]
    adds = [n for n in after.nodes if n.op == "add"]
    assert not adds, f"unfused residual adds: {[n.name for n in adds]}"
    counts = dict(optimized.rewrites)
    assert counts["fold_batchnorm"] > 0 and counts["fuse_activation"] > 0
    if name != "original":
        assert counts["fuse_residual_add"] > 0
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    for compiled in (znnx.compile(graph), znnx.compile(graph, optimize=False)):
        assert rel_error(compiled(x), expected) < 1e-4


def test_report_lists_every_pass() -> None:
    model = NETS["symmetric"].build(True, PATCHES["symmetric"]).eval()
    optimized = optimize(znnx.load(model, (1, *PATCHES["symmetric"])))
    report = optimized.report()
    for name in ("fold_batchnorm", "fuse_activation", "fuse_residual_add", "eliminate_padding", "remove_identity"):
        assert name in report
