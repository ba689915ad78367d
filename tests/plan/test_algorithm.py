"""Algorithms as values (plan/algorithm.py): names, and the output tile each covers per axis."""

from __future__ import annotations

import pytest

from znnx.plan.algorithm import DIRECT, IMPLICIT, fft, winograd


@pytest.mark.parametrize("algorithm, k, outputs", [
    (winograd(4), 3, 4), (winograd(2), 5, 2), (winograd(4), 1, 1),
    (fft(24), 7, 18), (fft(16), 7, 10), (fft(16), 1, 1), (fft(16), 20, 1),
    (DIRECT, 7, 1), (IMPLICIT, 3, 1)])
def test_the_output_tile_per_axis(algorithm, k: int, outputs: int) -> None:
    assert algorithm.outputs(k) == outputs
