"""THE resumable iteration loop of the fine-tuned dense transfers (segmentation, depth).

`train_iterations` runs SGD-style steps from iteration `start` to `job.protocol.iterations` over
training pairs keyed by (position, index) (pretrain/sampling.py's stream mode: a view depends
only on the seed and the sample's position since the start of training), re-seeds dropout every
iteration, stops on a non-finite loss (pretrain/rundir.py:check_finite, nothing saved), and saves
the model, optimiser, step and training seconds to the job's run directory every
`job.ckpt_every_min` minutes and at the last iteration. A resumed run therefore equals an
uninterrupted one. Each task supplies its pairs and its step (loss + optimiser update).

Every 10 steps and at the last, a step line (loss, lr, s/it, images seen) goes to
`<run_dir>/log.jsonl` and, with the job's `log_to` (`--log-to tensorboard,wandb`), to those
(pretrain/step_log.py:TrainerLog).

`job` needs: protocol (iterations, batch_size, lr(iteration, base_lr)), lr, seed, run_dir,
device, num_workers, ckpt_every_min, log_to.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pretrain import rundir
from pretrain.sampling import SeededBatches, sample_seed
from pretrain.step_log import open_trainer_log

# step(model, optimizer, inputs, targets, lr) -> loss (float); a non-finite loss is not stepped on
Step = Callable[[nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor, float], float]


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every parameter group at `lr` (the protocol's schedule, computed per iteration)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def train_iterations(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    job,
    start: int,
    seconds: float,
    pairs: Dataset,
    step: Step,
    what: str,
) -> float:
    """Iterations `start`..end of `job` with `step` on `pairs`, checkpointing; returns the
    training seconds so far (`seconds`: those of the iterations before `start`). `what` names
    the loss in a non-finite-loss error ("segmentation loss", "depth loss")."""
    protocol, device = job.protocol, torch.device(job.device)
    sampler = SeededBatches(len(pairs), protocol.batch_size, job.seed, last="stream")
    sampler.set_steps(start, protocol.iterations)
    loader = DataLoader(
        pairs,
        batch_sampler=sampler,
        num_workers=job.num_workers,
        pin_memory=device.type == "cuda",
    )
    model.train()
    bar = tqdm(loader, total=len(sampler), initial=0, desc=f"train lr {job.lr:g} seed {job.seed}")
    settings = {"lr": job.lr, "seed": job.seed, "iterations": protocol.iterations, "what": what}
    log = open_trainer_log(job.run_dir, job.log_to, settings)
    try:
        return _iterate(model, optimizer, job, start, seconds, bar, step, what, log)
    finally:
        log.close()


def _iterate(model, optimizer, job, start, seconds, bar, step, what, log) -> float:
    """The loop of train_iterations over the batches of `bar`."""
    protocol, device = job.protocol, torch.device(job.device)
    began = last_save = time.monotonic()
    for iteration, (inputs, targets) in enumerate(bar, start=start):
        lr = protocol.lr(iteration, job.lr)
        torch.manual_seed(sample_seed(job.seed, iteration, 2))  # dropout: exact resume
        loss = step(model, optimizer, inputs.to(device), targets.to(device), lr)
        rundir.check_finite(loss, step=iteration, lr=lr, run_dir=job.run_dir, what=what)
        elapsed, done = time.monotonic() - began, iteration + 1
        bar.set_postfix(
            it=f"{done}/{protocol.iterations}",
            loss=f"{loss:.4f}",
            lr=f"{lr:.2e}",
            s_it=f"{elapsed / (done - start):.2f}",
        )
        images_seen = done * protocol.batch_size
        log.step(done, last=done == protocol.iterations, loss=loss, lr=lr, images_seen=images_seen)
        if done == protocol.iterations or rundir.checkpoint_due(last_save, job.ckpt_every_min):
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": done,
                "train_seconds": seconds + elapsed,
                "loss": loss,
            }
            rundir.save(job.run_dir, state)
            last_save = time.monotonic()
    return seconds + time.monotonic() - began


def resume_or_start(model: nn.Module, optimizer: torch.optim.Optimizer, run_dir) -> tuple:
    """(start iteration, training seconds so far): the run dir's checkpoint loaded into model
    and optimizer, or (0, 0.0) for a fresh run."""
    state = rundir.resume(run_dir)
    if state is None:
        return 0, 0.0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"]), float(state["train_seconds"])
