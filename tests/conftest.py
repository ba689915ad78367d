"""Session setup: znnx's on-disk caches (compiled kernels, autotuner choices) go to a fresh temporary
directory, so tests neither read a developer's cache nor leave files in it; and the autotuner takes
every timing as steady and uncontended (tests of caching and choices must not depend on how busy the
machine is; tests/plan/test_autotune.py checks the noise and contention rules with fake clocks)."""

from __future__ import annotations

import os
import tempfile

import pytest


def pytest_configure(config: pytest.Config) -> None:
    os.environ["ZNNX_CACHE_DIR"] = tempfile.mkdtemp(prefix="znnx-test-cache-")


@pytest.fixture(autouse=True)
def steady_timings(monkeypatch: pytest.MonkeyPatch) -> None:
    from znnx.plan import autotune

    monkeypatch.setattr(autotune, "NOISE", float("inf"))
    monkeypatch.setattr(autotune, "CONTENDED", 0.0)
