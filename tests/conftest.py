"""Session setup: znnx's on-disk caches (compiled kernels, autotuner choices) go to a fresh temporary
directory, so tests neither read a developer's cache nor leave files in it."""

from __future__ import annotations

import os
import tempfile

import pytest


def pytest_configure(config: pytest.Config) -> None:
    os.environ["ZNNX_CACHE_DIR"] = tempfile.mkdtemp(prefix="znnx-test-cache-")
