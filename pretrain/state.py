"""Pretraining's full training state in a checkpoint, and the RNG states it carries.

`training_state(run)` is what pretrain/train.py saves (pretrain/rundir.py: atomically, rank 0) and
`restore_training_state(run, state)` puts it back: the method's online and target networks (with
DINO's centres), the optimiser's state, the fp16 loss scaler's, the online probe and its optimiser,
the step, the Python/NumPy/torch (and CUDA) RNG states, and the sampler's place (epoch, batches
done). Tensors and plain types only, so `torch.load(weights_only=True)` reads it
(docs/architecture.md, Conventions, rule 14). The config goes in too: evaluate/features.py reads
a training checkpoint as an export.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch: the same initial weights on every rank and restart."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Python, NumPy, torch (and CUDA) RNG states as tensors and plain types."""
    numpy_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "numpy": torch.from_numpy(numpy_state[1].astype(np.int64)),
        "numpy_pos": int(numpy_state[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` returned."""
    random.setstate((state["python_version"], tuple(state["python"]), None))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def training_state(run) -> dict:
    """The checkpoint of a pretraining `Run` (pretrain/train.py) at its current step."""
    epoch, steps_done = divmod(run.step, run.schedule.steps_per_epoch)
    return {
        "step": run.step,
        "epoch": epoch,
        "model": run.network.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        **({"scaler": run.scaler.state_dict()} if run.scaler else {}),
        "probe": run.probe.state_dict(),
        "probe_optimizer": run.probe_optimizer.state_dict(),
        "sampler": {"epoch": epoch, "start_step": steps_done},
        "rng": rng_state(),
        "config": dataclasses.asdict(run.config),
    }


def restore_training_state(run, state: dict) -> None:
    """Put a checkpoint's state back into `run` (the sampler follows from the step)."""
    run.network.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    if run.scaler:
        run.scaler.load_state_dict(state["scaler"])
    run.probe.load_state_dict(state["probe"])
    run.probe_optimizer.load_state_dict(state["probe_optimizer"])
    set_rng_state(state["rng"])
    run.step = state["step"]
