"""Semantic-segmentation metric: mean intersection-over-union from a confusion matrix.

As MoCo (He et al. 2020, detectron2's SemSegEvaluator) and mmseg's IoUMetric: one K x K confusion
matrix summed over every evaluated pixel of the split (pixels labelled IGNORE = 255 excluded);
IoU_k = TP_k / (TP_k + FP_k + FN_k); mIoU = the mean of IoU_k over the classes that occur in the
ground truth or the predictions (a class absent from both has no IoU and is left out).

Its 95% bootstrap interval resamples the evaluated images: each image's confusion matrix reduces
to three K-vectors (true positives, ground-truth and predicted pixels per class), whose sums over
any resample give every IoU (union = ground truth + predicted - true positives).
"""

from __future__ import annotations

import torch

from transfer.segmentation.data import IGNORE


def confusion(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int64 [K, K] counts, rows = ground truth, columns = prediction, IGNORE pixels skipped."""
    if labels.shape != predictions.shape:
        raise ValueError(f"labels {tuple(labels.shape)} and predictions {tuple(predictions.shape)}")
    valid = labels != IGNORE
    truth, guess = labels[valid].long(), predictions[valid].long()
    if truth.numel() and (truth.min() < 0 or truth.max() >= num_classes):
        raise ValueError(f"label values outside [0, {num_classes}) and != {IGNORE}")
    pairs = truth * num_classes + guess
    return torch.bincount(pairs.cpu(), minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_iou(matrix: torch.Tensor) -> torch.Tensor:
    """IoU per class (float64 [K]); NaN where the class is in neither labels nor predictions."""
    matrix = matrix.double()
    true_positive = matrix.diag()
    union = matrix.sum(0) + matrix.sum(1) - true_positive
    return torch.where(union > 0, true_positive / union.clamp(min=1), torch.nan)


def mean_iou(matrix: torch.Tensor) -> float:
    """mIoU in [0, 1] over the classes present (see the module docstring)."""
    iou = per_class_iou(matrix)
    present = ~iou.isnan()
    if not present.any():
        raise ValueError("no labelled pixels: mIoU is undefined")
    return float(iou[present].mean())


def image_counts(matrix: torch.Tensor) -> torch.Tensor:
    """int64 [3, K] of one image's confusion matrix: true positives, ground-truth pixels and
    predicted pixels per class (what a bootstrap over images needs)."""
    return torch.stack([matrix.diag(), matrix.sum(1), matrix.sum(0)])


def mean_iou_of_counts(counts) -> float:
    """mIoU in [0, 1] from summed image_counts [3, K] (numpy or torch), as mean_iou."""
    true_positive, truth, predicted = (counts[0] * 1.0, counts[1] * 1.0, counts[2] * 1.0)
    union = truth + predicted - true_positive
    present = union > 0
    return float((true_positive[present] / union[present]).mean())
