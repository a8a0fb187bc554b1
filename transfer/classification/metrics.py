"""The metric of each Table 3 column, in percent (BYOL v3, App. D.1):

- `top1`: the fraction of test images whose highest score is their label;
- `mean_per_class`: top-1 within each class, averaged over the classes (Aircraft, Pets,
  Caltech-101, Flowers);
- `map11`: VOC2007's 11-point interpolated average precision, averaged over the 20 classes
  (Everingham et al. 2010, Sec. 4.2; the VOC2007 devkit's VOCevalcls.m): per class, the images
  ranked by score; precision at recall level t is the highest precision at any recall >= t, for
  t in 0, 0.1, ..., 1, and AP is their mean. Labels are the devkit's: 1 positive, -1 negative,
  0 difficult; difficult images are left out of that class's ranking (VOCevalcls.m counts them
  neither as true nor as false positives).
"""

from __future__ import annotations

import torch

from evaluate.metrics import uncertainty
from results import bootstrap

METRICS = ("top1", "mean_per_class", "map11")
METRIC_TITLES = {"top1": "top-1", "mean_per_class": "mean per-class", "map11": "11-point mAP"}
RECALL_LEVELS = 11  # 0, 0.1, ..., 1.0


def top1(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Percent of rows of scores [N, C] whose argmax is labels [N]."""
    return 100.0 * (scores.argmax(dim=1) == labels).double().mean().item()


def mean_per_class(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 per class present in labels [N], averaged over those classes, in percent."""
    correct = (scores.argmax(dim=1) == labels).double()
    classes = labels.unique()
    per_class = torch.stack([correct[labels == label].mean() for label in classes])
    return 100.0 * per_class.mean().item()


def average_precision_11(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """11-point interpolated AP in [0, 1] of one class: scores [N], labels [N] in {1, 0, -1}
    (0, difficult: ignored)."""
    keep = labels != 0
    scores, positive = scores[keep], labels[keep] > 0
    if not bool(positive.any()):
        raise ValueError("average precision needs at least one positive image")
    order = torch.argsort(scores, descending=True, stable=True)
    true_positives = positive[order].double().cumsum(0)
    ranked = torch.arange(1, len(order) + 1, dtype=torch.float64)
    recall, precision = true_positives / positive.sum(), true_positives / ranked
    levels = torch.linspace(0, 1, RECALL_LEVELS, dtype=torch.float64)
    reached = recall.unsqueeze(0) >= levels.unsqueeze(1) - 1e-12  # [11, N]
    best = torch.where(reached, precision.unsqueeze(0), torch.zeros(()).double()).amax(dim=1)
    return best.mean().item()


def map11(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over classes of the 11-point AP, in percent: scores [N, C], labels [N, C] in
    {1, 0, -1}."""
    aps = [average_precision_11(scores[:, c], labels[:, c]) for c in range(scores.shape[1])]
    return 100.0 * sum(aps) / len(aps)


def score(metric: str, scores: torch.Tensor, labels: torch.Tensor) -> float:
    """`metric` (one of METRICS) of scores [N, C]; labels [N] (class indices) or, for map11,
    [N, C] in {1, 0, -1}."""
    functions = {"top1": top1, "mean_per_class": mean_per_class, "map11": map11}
    if metric not in functions:
        raise ValueError(f"unknown metric {metric!r}; one of {METRICS}")
    return functions[metric](scores.detach().double().cpu(), labels.cpu())


def score_uncertainty(metric: str, scores: torch.Tensor, labels: torch.Tensor) -> tuple:
    """(intervals, examples) of a record for `metric` of scores [N, C] against labels (as
    `score`): the 95% bootstrap interval over the images (results/bootstrap.py). Top-1 and mean
    per-class store one bit per image (and the labels); the 11-point mAP is recomputed on each
    resample from the scores, over the classes with a positive image in it; the scores are not
    stored (20 floats per image)."""
    if metric != "map11":
        correct = scores.argmax(dim=1) == labels
        return uncertainty({metric: correct}, labels if metric == "mean_per_class" else None)
    scores, labels = scores.double().cpu(), labels.long().cpu()

    def statistic(index) -> float:
        rows = torch.from_numpy(index)
        picked_scores, picked = scores[rows], labels[rows]
        present = [c for c in range(labels.shape[1]) if bool((picked[:, c] > 0).any())]
        aps = [average_precision_11(picked_scores[:, c], picked[:, c]) for c in present]
        return sum(aps) / len(aps)

    low, high = bootstrap.interval(statistic, len(labels))
    examples = {"count": len(labels), "bootstrap": bootstrap.settings()}
    return {metric: [round(100 * low, 4), round(100 * high, 4)]}, examples
