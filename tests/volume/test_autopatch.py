"""Auto patch size: candidates the net accepts, a budget that binds, and the fastest choice."""

from __future__ import annotations

import pytest
import torch

import znnx
from znnx.demo import model_path
from znnx.errors import InputError
from znnx.units import human_bytes, parse_bytes
from znnx.volume.autopatch import _cost, candidate_patches, choose_patch, default_budget, largest_fitting
from znnx.volume.runner import VolumeOptions


@pytest.fixture(scope="module")
def graph() -> znnx.Graph:
    return znnx.load(model_path(), input_shape=(1, 48, 48, 48))


def test_candidates_are_accepted_sizes_capped_at_the_volume(graph: znnx.Graph) -> None:
    patches = candidate_patches(graph, (70, 30, 90))
    assert all(p % 2 == 0 for patch in patches for p in patch)  # the demo net pools once
    assert max(p[1] for p in patches) == 30 and max(p[0] for p in patches) == 70


def test_choice_fits_the_budget_and_says_why(graph: znnx.Graph) -> None:
    roomy = choose_patch(graph, (80, 80, 80), VolumeOptions(), budget_bytes=2**30, measure=2)
    assert roomy.candidates and all(c.memory_bytes <= 2**30 for c in roomy.candidates)
    assert roomy.patch == min(roomy.candidates, key=lambda c: c.seconds or 0).patch
    assert "patch(es) x" in roomy.reason and "budget" in roomy.reason
    tight = choose_patch(graph, (80, 80, 80), VolumeOptions(), budget_bytes=12 * 2**20, measure=1)
    assert tight.candidates[0].memory_bytes <= 12 * 2**20 and tight.patch < roomy.patch
    with pytest.raises(InputError, match=r"no patch fits the memory budget of 1000 B.*raise --memory"):
        choose_patch(graph, (80, 80, 80), VolumeOptions(), budget_bytes=1000)


def test_memory_sizes_parse() -> None:
    assert parse_bytes("8GiB") == 8 * 2**30
    assert parse_bytes("512MB") == 512 * 10**6
    assert parse_bytes("1.5e9") == 1_500_000_000
    with pytest.raises(InputError, match="memory size: cannot read"):
        parse_bytes("lots")
    with pytest.raises(InputError, match="no memory at all"):
        parse_bytes("0")


def test_memory_sizes_print_in_a_readable_unit() -> None:
    assert human_bytes(2**20) == "1.0 MiB"
    assert human_bytes(3 * 2**29) == "1.50 GiB"
    assert human_bytes(1000) == "1000 B"


def test_the_largest_patch_that_fits_lies_between_grid_scales(graph: znnx.Graph) -> None:
    volume = (400, 400, 400)
    costed = [c for c in (_cost(graph, p, volume, VolumeOptions()) for p in candidate_patches(graph, volume)) if c]
    sizes = sorted(c.memory_bytes for c in costed)
    budget = (sizes[-3] + sizes[-2]) // 2  # between two grid scales
    largest = largest_fitting(graph, volume, VolumeOptions(), budget, costed)
    assert largest is not None and largest.memory_bytes <= budget
    grid = max((c for c in costed if c.memory_bytes <= budget), key=lambda c: c.patch)
    assert largest.patch > grid.patch
    bigger = _cost(graph, tuple(p + 2 for p in largest.patch), volume, VolumeOptions())
    assert bigger is not None and bigger.memory_bytes > budget * 0.97


def test_the_default_budget_is_most_of_the_free_ram_on_the_cpu() -> None:
    from znnx.backends import cpu

    free = cpu.free_memory(torch.device("cpu"))
    assert 0.7 * free <= default_budget("cpu") <= 0.85 * free
