"""THE run directory of every resumable loop: claim it, save and resume, stop on a non-finite loss.

Used by pretraining (pretrain/train.py), fine-tuning (evaluate/finetune.py), detection
(transfer/detection/train.py) and segmentation (transfer/segmentation/engine.py). Each loop keeps
its own short step function; this module holds what they share (docs/architecture.md,
Conventions, rules 14, 15 and 19):

    claim(run_dir, identity, what=...)   <run_dir>/config.json holds the run's identity (a dict
                                         of plain values); a run dir holding another identity is
                                         refused with the differing fields named
    resume(run_dir) -> state | None      the newest good checkpoint (last.pt, else previous.pt or
                                         a keeper; digest-checked: pretrain/checkpoint.py)
    save(run_dir, state, info)           rank 0 writes last.pt atomically (the old one becomes
                                         previous.pt)
    check_finite(loss, step=, lr=, ...)  raises NonFiniteLossError naming step and lr; called
                                         before every save, so the last good checkpoint is kept

Resume is not a flag: a run dir with a checkpoint resumes, and refuses a different identity.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from pathlib import Path

import torch

from pretrain import dist
from pretrain.checkpoint import CheckpointError, load_latest_good, save_checkpoint
from pretrain.identity import as_plain, identity_differences
from results.atomic import write_atomic
from results.errors import ByolBenchError

IDENTITY_FILE = "config.json"  # results/pipeline.py reads pretraining's from here too


class ConfigMismatchError(CheckpointError, ValueError):
    """A run directory (its checkpoints) belongs to a run with a different identity."""


class NonFiniteLossError(ByolBenchError, FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    def __init__(self, message: str, *, step: int, lr: float) -> None:
        super().__init__(message)
        self.step, self.lr = step, lr


def claim(
    run_dir: str | Path,
    identity: dict,
    *,
    what: str,
    info: dist.DistInfo | None = None,
    ignore: Iterable[str] = (),
    added: dict | None = None,
) -> Path:
    """Create `run_dir` with its identity file, or check the one it holds; returns the path.

    Rank 0 alone reads and writes the file (atomically); the other ranks wait at the barrier
    and fail there if rank 0 refuses the run dir, so no rank ever reads a half-written file.
    `ignore`: runtime fields that may change between a run and its resumption (workers, ...).
    `added`: {field: default} of fields added since older identity files were written.
    """
    run_dir, info = Path(run_dir), info or dist.DistInfo()
    path = run_dir / IDENTITY_FILE
    if info.is_main:
        if path.is_file():
            saved = {**(added or {}), **json.loads(path.read_text())}
            differences = identity_differences(saved, identity, ignore)
            if differences:
                raise ConfigMismatchError(
                    f"{run_dir} holds a different {what} ({'; '.join(differences[:8])}); pass "
                    "another --run-dir, or the same settings to resume it"
                )
        else:
            write_atomic(path, (json.dumps(as_plain(identity), indent=2) + "\n").encode())
    dist.barrier()
    return run_dir


def resume(run_dir: str | Path) -> dict | None:
    """The state of the run dir's newest good checkpoint, or None for a new run."""
    return load_latest_good(run_dir)


def save(
    run_dir: str | Path,
    state: dict,
    info: dist.DistInfo | None = None,
    keep_name: str | None = None,
) -> None:
    """Rank 0 writes `state` as the run's last.pt (callers check the loss first)."""
    if info is None or info.is_main:
        save_checkpoint(run_dir, state, keep_name=keep_name)


def checkpoint_due(last_save: float, minutes: float) -> bool:
    """True once `minutes` have passed since `last_save` (time.monotonic()); 0 saves every step.

    The one checkpoint cadence of every loop (`--ckpt-every-min`): what a preemption can lose.
    """
    return time.monotonic() - last_save >= minutes * 60


def check_finite(
    loss: float | torch.Tensor,
    *,
    step: int,
    lr: float,
    run_dir: str | Path,
    what: str = "loss",
    details: str = "",
    hint: str = "lower the learning rate or check the input data",
) -> None:
    """Raise NonFiniteLossError if `loss` (at `step`, learning rate `lr`) is NaN or infinite.

    docs/architecture.md, Conventions, rule 19: stop with step and lr in the message. Every loop
    calls this before it saves, so nothing past the last good state reaches the run dir's
    checkpoints.
    """
    value = float(loss.item() if isinstance(loss, torch.Tensor) else loss)
    if math.isfinite(value):
        return
    extra = f", {details}" if details else ""
    raise NonFiniteLossError(
        f"the {what} became non-finite at step {step} (lr {lr:.4g}{extra}): {value}. The last "
        f"good checkpoint in {Path(run_dir) / 'checkpoints'} is kept; {hint}, then rerun the "
        "same command to resume from it",
        step=step,
        lr=lr,
    )
