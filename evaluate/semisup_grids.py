"""The semi-supervised fine-tuning grids (BYOL v3, App. C.1) and the protocol names their
results are recorded under: the paper's grid, the CPU-sized demo grid, or `custom-<f>pct/1`
when a setting was changed (evaluate/semisup.py, SemiSupConfig).
"""

from __future__ import annotations

from dataclasses import dataclass

from evaluate.finetune import Cell
from results.published import SEMISUP_PROTOCOLS


@dataclass(frozen=True)
class Grid:
    """A named hyper-parameter grid and the protocol name its results are recorded under."""

    lrs: tuple[float, ...]  # at batch 1024
    epochs: dict[int, tuple[int, ...]]  # per labelled fraction
    batch_size: int
    heldout_max: int | None  # compare the cells on at most this many held-out images

    def protocol(self, name: str, fraction: int) -> str:
        return SEMISUP_PROTOCOLS[fraction] if name == "paper" else f"{name}-{fraction}pct/1"


GRIDS = {
    # BYOL v3, App. C.1: LR in {0.01, 0.02, 0.05, 0.1, 0.005} x epochs in {30, 50}, batch 1024.
    "paper": Grid((0.01, 0.02, 0.05, 0.1, 0.005), {1: (30, 50), 10: (30, 50)}, 1024, None),
    # DEVIATION(demo-grid): not the paper's; recorded as demo-<f>pct/1, never as byol-paper-*.
    # Sized for `make demo` on 2 CPU cores (README "The demo": at most ~3 minutes for 1% + 10%
    # of Fashion-MNIST at 32 px): two of the paper's LRs, batch 128, 25 steps per 1% cell (5
    # epochs of 600 images) and 47 per 10% cell (1 epoch of 6,000), 1,000 held-out images. In
    # our sweep on the demo checkpoint, 0.05 and 0.1 beat 0.2 to 3.2 at both fractions.
    "demo": Grid((0.05, 0.1), {1: (5,), 10: (1,)}, 128, 1000),
}


def protocol_name(config) -> str:
    """The grid's protocol name, or `custom-<f>pct/1` when the grid was changed."""
    grid = GRIDS[config.grid]
    same = (config.lrs, config.epochs, config.heldout_max) == (
        grid.lrs,
        grid.epochs[config.fraction],
        grid.heldout_max,
    )
    paper = (config.momentum, config.weight_decay) == (0.9, 0.0)
    return grid.protocol(config.grid if same and paper else "custom", config.fraction)


def grid_cells(config) -> list[Cell]:
    """Every (LR, epochs) cell, epochs-major in the paper's order; ties go to the first."""
    return [Cell(lr, epochs) for epochs in config.epochs for lr in config.lrs]
