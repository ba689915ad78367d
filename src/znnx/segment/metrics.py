"""Segmentation quality against a ground truth: variation of information (split and merge parts)
and adapted Rand error (as in the SNEMI3D challenge: 1 - F-score of the Rand split and merge
scores, ground-truth background excluded)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from znnx.errors import InputError


@dataclass(frozen=True)
class Information:
    """Variation of information in bits: split = H(segmentation | truth), merge = H(truth | segmentation)."""

    split: float
    merge: float

    @property
    def total(self) -> float:
        return self.split + self.merge


def _contingency(segmentation: np.ndarray, truth: np.ndarray, skip_background: bool) -> tuple[np.ndarray, ...]:
    if segmentation.shape != truth.shape:
        raise InputError(f"metrics: segmentation {segmentation.shape} and ground truth {truth.shape} differ in shape")
    seg, gt = segmentation.reshape(-1), truth.reshape(-1)
    if skip_background:
        keep = gt != 0
        seg, gt = seg[keep], gt[keep]
    _, s = np.unique(seg, return_inverse=True)
    _, g = np.unique(gt, return_inverse=True)
    pairs, joint = np.unique(np.stack([s.reshape(-1), g.reshape(-1)]), axis=1, return_counts=True)
    return pairs[0], pairs[1], joint.astype(np.float64), np.bincount(s.reshape(-1)).astype(np.float64), \
        np.bincount(g.reshape(-1)).astype(np.float64)


def variation_of_information(segmentation: np.ndarray, truth: np.ndarray) -> Information:
    """Split and merge parts of the variation of information between two labelings (every label,
    0 included, is a segment)."""
    _, _, joint, seg_sizes, gt_sizes = _contingency(segmentation, truth, False)
    n = joint.sum()
    if n == 0:
        return Information(0.0, 0.0)
    p = joint / n
    h_joint = -(p * np.log2(p)).sum()
    h_seg = -((seg_sizes / n) * np.log2(seg_sizes / n)).sum()
    h_gt = -((gt_sizes / n) * np.log2(gt_sizes / n)).sum()
    return Information(split=float(h_joint - h_gt), merge=float(h_joint - h_seg))


def adapted_rand_error(segmentation: np.ndarray, truth: np.ndarray) -> float:
    """1 - the F-score of Rand precision and recall over voxel pairs, ground-truth background (0)
    excluded; 0 for identical segmentations."""
    _, _, joint, seg_sizes, gt_sizes = _contingency(segmentation, truth, True)
    both = (joint ** 2).sum()
    precision = both / max((seg_sizes ** 2).sum(), 1.0)
    recall = both / max((gt_sizes ** 2).sum(), 1.0)
    if precision + recall == 0:
        return 1.0
    return float(1.0 - 2.0 * precision * recall / (precision + recall))


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two labelings cut the voxels into the same sets (label values aside)."""
    pairs = np.unique(np.stack([a.reshape(-1), b.reshape(-1)]), axis=1)
    return pairs.shape[1] == len(np.unique(a)) == len(np.unique(b))
