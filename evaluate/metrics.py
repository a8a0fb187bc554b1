"""Classification metrics, as percentages (the unit of every record and paper table)."""

from __future__ import annotations

import torch


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
