"""Variation of information and adapted Rand error on cases worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from znnx.errors import InputError
from znnx.segment.metrics import adapted_rand_error, variation_of_information


def test_identical_segmentations_score_zero_whatever_the_labels() -> None:
    truth = np.array([[1, 1, 2, 2], [3, 3, 3, 0]])
    relabelled = np.array([[7, 7, 5, 5], [9, 9, 9, 4]])
    assert adapted_rand_error(relabelled, truth) == pytest.approx(0.0)
    information = variation_of_information(relabelled, truth)
    assert information.split == pytest.approx(0.0) and information.merge == pytest.approx(0.0)


def test_a_split_is_a_split_and_a_merge_is_a_merge() -> None:
    truth = np.array([1, 1, 1, 1, 2, 2, 2, 2])
    split = np.array([1, 1, 3, 3, 2, 2, 2, 2])  # one true segment cut in half
    merged = np.array([1, 1, 1, 1, 1, 1, 1, 1])  # the two true segments in one
    assert variation_of_information(split, truth).split == pytest.approx(0.5)  # H(seg | truth) = 1/2 bit
    assert variation_of_information(split, truth).merge == pytest.approx(0.0)
    assert variation_of_information(merged, truth).merge == pytest.approx(1.0)
    assert variation_of_information(merged, truth).split == pytest.approx(0.0)
    # Rand: split: precision 1, recall (8 + 16) / 32 = 0.75 -> F = 6/7; merged: precision 32/64, recall 1 -> F = 2/3
    assert adapted_rand_error(split, truth) == pytest.approx(1 - 6 / 7)
    assert adapted_rand_error(merged, truth) == pytest.approx(1 - 2 / 3)


def test_ground_truth_background_is_left_out_of_the_rand_error() -> None:
    truth = np.array([0, 0, 1, 1])
    assert adapted_rand_error(np.array([5, 6, 1, 1]), truth) == pytest.approx(0.0)


def test_shapes_must_match() -> None:
    with pytest.raises(InputError, match="differ in shape"):
        adapted_rand_error(np.zeros((2, 2)), np.zeros((2, 3)))
