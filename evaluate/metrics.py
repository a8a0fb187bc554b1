"""Classification metrics, as percentages (the unit of every record and paper table)."""

from __future__ import annotations

import torch

from results import bootstrap


def topk_correct(
    scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)
) -> dict[int, torch.Tensor]:
    """Number of samples whose label is among the k highest scores, per k.

    scores: [..., B, C] (any leading dims, e.g. one row per probe head); labels: [B].
    Returns {k: count [...]}; k is capped at C (top-5 of a 3-class problem is top-3).
    """
    top = scores.topk(min(max(ks), scores.shape[-1]), dim=-1).indices  # [..., B, kmax]
    hits = top == labels.unsqueeze(-1)  # [..., B, kmax]
    return {k: hits[..., :k].any(dim=-1).sum(dim=-1) for k in ks}


def percent(count: torch.Tensor | int, total: int) -> float:
    """100 x count / total as a Python float."""
    return 100.0 * float(count) / max(total, 1)


def topk_hits(scores: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[int, torch.Tensor]:
    """Per example [N] (bool): is its label among the k highest of scores [N, C], per k."""
    top = scores.topk(min(max(ks), scores.shape[-1]), dim=-1).indices
    hits = top == labels.unsqueeze(-1)
    return {k: hits[:, :k].any(dim=-1) for k in ks}


def uncertainty(correct: dict[str, torch.Tensor], labels: torch.Tensor | None = None):
    """(intervals, examples) of a record for accuracy-type metrics: `correct` maps each metric
    name (top1, top5, mean_per_class) to one bool per evaluated example; mean_per_class also
    needs `labels` [N]. 95% percentile bootstrap, 1,000 seeded resamples (results/bootstrap.py);
    the examples block holds the bits (and labels) the intervals were drawn from."""
    intervals, packed = {}, {}
    for name, hits in correct.items():
        array = hits.detach().cpu().numpy().astype(bool)
        if name == "mean_per_class":
            bounds = bootstrap.mean_per_class_interval(array, labels.cpu().numpy())
        else:
            bounds = bootstrap.accuracy_interval(array)
        intervals[name], packed[name] = [round(b, 4) for b in bounds], bootstrap.pack_bits(array)
    count = len(next(iter(correct.values())))
    examples = {"count": count, "bootstrap": bootstrap.settings(), "correct": packed}
    if labels is not None:
        examples["labels"] = bootstrap.pack_labels(labels.cpu().numpy())
    return intervals, examples
