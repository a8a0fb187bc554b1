"""The transfer fine-tuning grids (BYOL v3, App. D.3) and the protocol names their results are
recorded under: the paper's grid (`byol-transfer-finetune/1`) or the CPU-sized demo grid
(`demo-transfer-finetune/1`, never recorded as the paper's).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evaluate.finetune import Cell

PAPER_PROTOCOL = "byol-transfer-finetune/1"
LR_BATCH_SIZE = 256  # the batch the grid's LRs are stated at (BYOL v3, App. D.3)


@dataclass(frozen=True)
class FinetuneGrid:
    """One hyper-parameter grid: every LR x every weight decay, each cell `steps` long."""

    lrs: tuple[float, ...]  # at batch LR_BATCH_SIZE; scaled linearly for other batches
    weight_decays: tuple[float, ...]  # the grid's values; the optimiser gets value / LR
    steps: int  # SGD steps per cell (and for the final retrain)
    batch_size: int
    momentum: float = 0.9  # BYOL v3, App. D.3: Nesterov momentum 0.9


GRIDS = {
    # BYOL v3, App. D.3 (= SimCLR App. B.8.1): 20,000 steps at batch 256; LR among 7 log-spaced
    # values in [1e-4, 0.1]; weight decay among 7 log-spaced values in [1e-6, 1e-3] and 0: 56
    # cells. ssl-transfer's finetune.py builds the same axes (torch.logspace, 7 = its
    # --grid-size; its default is 4 values and 5,000 steps).
    "paper": FinetuneGrid(
        lrs=tuple(float(lr) for lr in np.logspace(-4, -1, 7)),
        weight_decays=(0.0, *(float(wd) for wd in np.logspace(-6, -3, 7))),
        steps=20_000,
        batch_size=256,
    ),
    # DEVIATION(demo-grid): not the paper's; recorded as demo-transfer-finetune/1. Sized for a
    # CPU: 24 steps at batch 16 (so LRs are scaled by 16/256), LR {0.4, 0.1} x weight decay
    # {0, 1e-4}. On 300 synthetic 32 px images from random:resnet18 the paper's 0.1 and 0.01
    # scored 24-32% and 10-11% val top-1 (chance 10%), 0.4 25-33%, 1.6 7-10%.
    "demo": FinetuneGrid(lrs=(0.4, 0.1), weight_decays=(0.0, 1e-4), steps=24, batch_size=16),
}


def protocol_name(grid: str) -> str:
    """`byol-transfer-finetune/1` for the paper's grid, `<grid>-transfer-finetune/1` else."""
    if grid not in GRIDS:
        raise ValueError(f"unknown fine-tuning grid {grid!r}; one of {sorted(GRIDS)}")
    return PAPER_PROTOCOL if grid == "paper" else f"{grid}-transfer-finetune/1"


def grid_cells(grid: FinetuneGrid) -> list[Cell]:
    """Every (LR, weight decay) cell in ssl-transfer's order: the largest LR first, then weight
    decay 0 first and ascending. Ties on the validation score go to the first listed (as
    ssl-transfer's strict `val_acc > best_score`): the larger LR, then the smaller decay."""
    return [
        Cell(lr, weight_decay=weight_decay, steps=grid.steps)
        for lr in sorted(grid.lrs, reverse=True)
        for weight_decay in sorted(grid.weight_decays)
    ]


def bn_momentum(steps_per_epoch: int) -> float:
    """BN running-statistics momentum in PyTorch's convention for `steps_per_epoch` steps.

    BYOL v3, App. D.3: decay max(1 - 10/s, 0.9) with s the steps per epoch, in TensorFlow's
    convention (running = decay x running + (1 - decay) x batch); PyTorch's momentum is
    1 - decay = min(10/s, 0.1). ssl-transfer leaves PyTorch's default 0.1 (a difference there
    when s > 100)."""
    return min(10.0 / steps_per_epoch, 0.1)
