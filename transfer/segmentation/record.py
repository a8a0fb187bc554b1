"""What a segmentation evaluation reads, how one (LR, seed) run is dispatched, and its one record.

The record follows results/record.py (family "segmentation", metric `miou` in percent) and is
written by the same rules as evaluate/cli.py's: status "complete" with metrics and selection, or
"failed" with the error (and the exception re-raised) once the inputs were validated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from evaluate import cli
from results.record import Record, Task
from transfer.segmentation.data import SegmentationSet
from transfer.segmentation.engine import Job, run_job

FAMILY = "segmentation"
log = logging.getLogger(__name__)


@dataclass
class Inputs:
    """Everything a segmentation evaluation reads, validated before any work starts."""

    encoder: nn.Module  # frozen copy of the pretrained backbone; each run fine-tunes a deep copy
    metadata: dict
    train_set: SegmentationSet
    eval_set: SegmentationSet
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: torch.device
    records_dir: Path
    run_dir: Path
    started: float  # time.monotonic() at the start of the command


def pick_device(requested: str | None) -> torch.device:
    """`--device`, refusing cuda where none is visible; default cuda when available."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise cli.InputError("--device cuda was given but no CUDA device is visible; use cpu")
    return torch.device(requested or ("cuda" if torch.cuda.is_available() else "cpu"))


def run_one_torchvision(config, inputs: Inputs, lr, seed, train_set, eval_set, run_dir) -> dict:
    """One (LR, seed) run on the built-in engine (transfer/segmentation/engine.py)."""
    job = Job(
        protocol=config.settings,
        lr=lr,
        seed=seed,
        train_set=train_set,
        eval_set=eval_set,
        run_dir=Path(run_dir),
        weights_sha256=inputs.metadata["weights_sha256"],
        mean=inputs.mean,
        std=inputs.std,
        device=str(inputs.device),
        num_workers=config.num_workers,
        ckpt_every=config.ckpt_every,
    )
    return run_job(job, inputs.encoder)


def run_and_record(
    inputs: Inputs, config, run: Callable[[], tuple[dict, dict]]
) -> tuple[Record, Path]:
    """Call `run()` -> (metrics, selection) and write the one record (status "failed" on error)."""
    settings = config.settings
    task = Task(FAMILY, settings.dataset, settings.eval_split, settings.name)
    return cli.record_run(inputs, config, task, run)
