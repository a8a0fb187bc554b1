"""BYOL pretraining: the whole run as one narrative.

train(config, run_dir):  claim the run dir (pretrain/rundir.py) -> build data and networks
(pretrain/build.py) -> resume from run_dir or start -> for each epoch: train_one_epoch (train_step
per batch) -> checkpoint + one log.jsonl line -> export the online encoder and write the pretrain
record (pretrain/export_metadata.py).

The step (BYOL v3, Sec. 3.2 and Algorithm 1) is `train_step`: loss over both directions, summed ->
backward -> LARS step -> target update with tau_at(step). Resume is exact: the model, optimiser,
probe, step and RNG states are in the checkpoint (pretrain/state.py), and each sample's
augmentation is drawn from sample_seed(seed, epoch, index) (pretrain/sampling.py), so the result
depends neither on the number of loader workers nor on where the run was interrupted.
"""

import dataclasses
import json
import logging
import time
from pathlib import Path

import torch
from tqdm import tqdm

from pretrain import dist, log_sinks, rundir, step_log
from pretrain import views as views_lib
from pretrain.build import Run, build_run, memory_format, resolve_compile
from pretrain.config import RUNTIME_FIELDS, PretrainConfig, added_defaults
from pretrain.ema import update_target
from pretrain.export_metadata import export_run
from pretrain.online_probe import probe_accuracy, probe_step
from pretrain.provenance import provenance
from pretrain.state import restore_training_state, training_state

log = logging.getLogger(__name__)


def train(config: PretrainConfig, run_dir: str | Path, device: str | None = None) -> Path:
    """Pretrain BYOL into ``run_dir`` (resuming if it holds a run) and return the export's path."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    info = dist.init_from_env(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    dist.setup_logging(info.rank)
    run_dir = prepare_run_dir(Path(run_dir), config, info)
    run = build_run(config, run_dir, device, info)
    restore(run)
    log_header(run)
    if info.is_main:  # --log-to: log.jsonl's lines also to TensorBoard / W&B
        run.log_sinks = log_sinks.open_sinks(run_dir, config.log_to, dataclasses.asdict(config))
    try:
        start_epoch = run.step // run.schedule.steps_per_epoch
        for epoch in range(start_epoch, config.epochs):
            if _max_steps_reached(run):  # a rerun of a run that already stopped at --max-steps
                break
            stats = train_one_epoch(run, epoch)
            end_of_epoch(run, epoch, stats)
            if stats["stopped_early"]:
                break
        export_path = export(run) if info.is_main else None
    finally:
        for sink in run.log_sinks:
            sink.close()
    dist.barrier()
    return export_path


def prepare_run_dir(run_dir: Path, config: PretrainConfig, info: dist.DistInfo) -> Path:
    """Claim the run dir for `config` (pretrain/rundir.py): config.json, written by rank 0."""
    return rundir.claim(
        run_dir,
        dataclasses.asdict(config),
        what="pretraining run",
        info=info,
        ignore=RUNTIME_FIELDS,
        added=added_defaults(),
    )


def train_step(run: Run, view_1: torch.Tensor, view_2: torch.Tensor, labels: torch.Tensor):
    """One BYOL step (BYOL v3, Algorithm 1); returns (loss, probe correct count) on device."""
    lr, tau = run.schedule.lr(run.step), run.schedule.tau(run.step)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    autocast = torch.autocast(
        run.device.type, dtype=torch.bfloat16, enabled=run.config.precision == "bf16"
    )
    with autocast:
        loss, features_1 = run.model(view_1, view_2)  # both directions, summed; [B, feature_dim]
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    update_target(run.byol.online_modules(), run.byol.target_modules(), tau)
    _, probe_correct = probe_step(run.probe, run.probe_optimizer, features_1, labels)
    return loss.detach(), probe_correct


def train_one_epoch(run: Run, epoch: int) -> dict:
    """Train from the run's current step to the end of ``epoch`` (or to max_steps)."""
    steps_per_epoch = run.schedule.steps_per_epoch
    start = run.step - epoch * steps_per_epoch
    run.sampler.set_epoch(epoch, start_step=start)
    run.model.train()
    meter = _EpochMeter(run.device)
    bar = tqdm(
        total=steps_per_epoch,
        initial=start,
        desc=f"epoch {epoch + 1}/{run.config.epochs}",
        disable=not run.info.is_main,
        dynamic_ncols=True,
    )
    stopped_early = False
    for batch in run.loader:
        view_1, view_2, labels = batch_to_device(run, batch)
        loss, probe_correct = train_step(run, view_1, view_2, labels)
        meter.add(loss, probe_correct, labels.numel(), run.step)
        run.step += 1
        bar.update(1)
        if run.step % run.config.log_every_steps == 0:
            bar.set_postfix(meter.postfix(run), refresh=False)
            log_step(run, meter)
        if rundir.checkpoint_due(run.last_save, run.config.ckpt_every_min):
            check_finite(run, (int(meter.first_bad_step.item()), meter.first_bad_loss.item()))
            save(run)
        if run.config.max_steps is not None and run.step >= run.config.max_steps:
            stopped_early = run.step % steps_per_epoch != 0
            break
    bar.close()
    return {**meter.summary(run), "stopped_early": stopped_early or _max_steps_reached(run)}


def log_step(run: Run, meter: "_EpochMeter") -> None:
    """One step line of log.jsonl (pretrain/step_log.py), written by rank 0."""
    loss, img_per_s = meter.window(run.info.world_size)
    if not run.info.is_main:
        return
    line = {
        "kind": "step",
        "step": run.step,
        "epoch": round(run.step / run.schedule.steps_per_epoch, 4),
        "images_seen": run.step * run.config.batch_size,
        "loss": loss,
        "lr": run.schedule.lr(run.step - 1),
        "tau": run.schedule.tau(run.step - 1),
        "img_per_s": img_per_s,
    }
    probe_due = (run.step // run.config.log_every_steps) % step_log.PROBE_EVERY_LINES == 0
    if probe_due and run.probe_loader is not None:
        if run.probe_heldout is None:
            run.probe_heldout = step_log.heldout_batch(run.probe_loader.dataset, run.device)
        top1 = step_log.heldout_top1(run.byol.online_encoder, run.probe, run.probe_heldout)
        line["online_probe_heldout_top1"] = top1
    step_log.record_line(run.run_dir, line, run.log_sinks)


def batch_to_device(run: Run, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A loader batch -> (view_1, view_2, labels) on the run's device; non-blocking copies."""
    layout = memory_format(run.config)
    if run.augment_on == "device":
        return views_lib.finish_on_device(batch, run.device, run.views, *run.stats, layout)
    view_1, view_2, labels = batch
    view_1 = view_1.to(run.device, non_blocking=True, memory_format=layout)
    view_2 = view_2.to(run.device, non_blocking=True, memory_format=layout)
    return view_1, view_2, labels.to(run.device, non_blocking=True)


def _max_steps_reached(run: Run) -> bool:
    return run.config.max_steps is not None and run.step >= run.config.max_steps


class _EpochMeter:
    """Loss/probe sums kept on device; read (one host sync) only at log and save points."""

    def __init__(self, device: torch.device) -> None:
        self.loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.first_bad_step = torch.full((), -1, device=device, dtype=torch.long)
        self.first_bad_loss = torch.zeros((), device=device)
        self.seen = self.steps = 0
        self.started = time.monotonic()
        self.mark = (0.0, 0, 0, self.started)  # loss sum, steps, images, time at the last line

    def window(self, world_size: int) -> tuple[float, float]:
        """(mean loss, img/s over all ranks) of the steps since the previous call."""
        loss_sum, now = self.loss_sum.item(), time.monotonic()
        loss_mark, steps_mark, seen_mark, time_mark = self.mark
        self.mark = (loss_sum, self.steps, self.seen, now)
        loss = (loss_sum - loss_mark) / max(self.steps - steps_mark, 1)
        return loss, (self.seen - seen_mark) * world_size / max(now - time_mark, 1e-9)

    def add(self, loss: torch.Tensor, correct: torch.Tensor, batch: int, step: int) -> None:
        first_bad = (self.first_bad_step < 0) & ~torch.isfinite(loss)
        self.first_bad_step = torch.where(
            first_bad, torch.full_like(self.first_bad_step, step), self.first_bad_step
        )
        self.first_bad_loss = torch.where(first_bad, loss.float(), self.first_bad_loss)
        self.loss_sum += loss.double()
        self.correct += correct
        self.seen += batch
        self.steps += 1

    def img_per_s(self, world_size: int) -> float:
        return self.seen * world_size / max(time.monotonic() - self.started, 1e-9)

    def postfix(self, run: Run) -> dict:
        return {
            "loss": f"{self.loss_sum.item() / max(self.steps, 1):.4f}",
            "lr": f"{run.schedule.lr(run.step):.3g}",
            "tau": f"{run.schedule.tau(run.step):.5f}",
            "img/s": f"{self.img_per_s(run.info.world_size):.0f}",
        }

    def summary(self, run: Run) -> dict:
        return {
            "loss": self.loss_sum.item() / max(self.steps, 1),
            "online_probe_train_top1": 100.0 * self.correct.item() / max(self.seen, 1),
            "img_per_s": self.img_per_s(run.info.world_size),
            "first_bad": (int(self.first_bad_step.item()), self.first_bad_loss.item()),
        }


def check_finite(run: Run, first_bad: tuple[int, float]) -> None:
    """Stop on the first non-finite loss (its step, loss) of the steps since the last check."""
    step, loss = first_bad
    rundir.check_finite(
        loss,
        step=step,
        lr=run.schedule.lr(max(step, 0)),
        run_dir=run.run_dir,
        what="BYOL loss",
        details=f"tau {run.schedule.tau(max(step, 0)):.5f}",
        hint="lower --base-lr or check the input data",
    )


def end_of_epoch(run: Run, epoch: int, stats: dict) -> None:
    """Check the loss, save, evaluate the online probe and append one log.jsonl line."""
    check_finite(run, stats["first_bad"])
    epoch_done = run.step % run.schedule.steps_per_epoch == 0
    keep = run.config.keep_every_epochs
    keep_name = (
        f"epoch_{epoch + 1:04d}.pt" if epoch_done and keep and (epoch + 1) % keep == 0 else None
    )
    save(run, keep_name=keep_name)
    dist.check_replicas_agree(run.byol.target_modules(), "target network")
    if not run.info.is_main:
        return
    line = {
        "epoch": epoch + 1 if epoch_done else round(run.step / run.schedule.steps_per_epoch, 4),
        "step": run.step,
        "loss": stats["loss"],
        "lr": run.schedule.lr(max(run.step - 1, 0)),
        "tau": run.schedule.tau(max(run.step - 1, 0)),
        "online_probe_train_top1": stats["online_probe_train_top1"],
        "online_probe_test_top1": probe_accuracy(
            run.byol.online_encoder, run.probe, run.probe_loader, run.device
        ),
        "img_per_s": stats["img_per_s"],
    }
    step_log.record_line(run.run_dir, line, run.log_sinks)
    if run.info.world_size > 1:
        log.info("target networks identical on all %d ranks", run.info.world_size)
    log.info("epoch %s: %s", line["epoch"], json.dumps(line))


def save(run: Run, keep_name: str | None = None) -> None:
    """Write the full training state (rank 0). Callers first check the loss was finite."""
    if run.saved_step == run.step and keep_name is None:
        return  # already on disk (a time-based save just before the epoch end)
    run.saved_step = run.step
    run.last_save = time.monotonic()
    if run.info.is_main:
        rundir.save(run.run_dir, training_state(run), keep_name=keep_name)


def restore(run: Run) -> None:
    """Load the newest good checkpoint of the run dir, if any (resume is not a flag)."""
    state = rundir.resume(run.run_dir)
    run.last_save = time.monotonic()
    if state is not None:
        restore_training_state(run, state)
        log.info("resumed at step %d (epoch %d)", run.step, state["epoch"])


def log_header(run: Run) -> None:
    """Print the git revision, the resolved config and the derived schedule."""
    header = {
        "run_dir": str(run.run_dir),
        **provenance(run.device, run.info.world_size),
        "config": dataclasses.asdict(run.config),
        "derived": {
            **dataclasses.asdict(run.schedule),
            "train_images": run.sampler.num_samples,
            "augment_on": run.augment_on,
            "compiled": resolve_compile(run.config, run.device),
            "single_position_convs": list(run.single_position_convs),
        },
        "resumed_at_step": run.step,
    }
    log.info("BYOL pretraining\n%s", json.dumps(header, indent=2))


def export(run: Run) -> Path:
    """Export the online encoder and write the pretrain record (pretrain/export_metadata.py)."""
    return export_run(
        run.run_dir,
        run.config,
        run.byol.online_encoder.state_dict(),
        step=run.step,
        steps_per_epoch=run.schedule.steps_per_epoch,
        feature_dim=run.byol.feature_dim,
        provenance=provenance(run.device, run.info.world_size),
        wall_seconds=time.monotonic() - run.started,
    )
