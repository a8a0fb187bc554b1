"""Pretraining (BYOL, and DINO / SelfPatch / byol-patch on ViTs): the whole run as one narrative.

train(config, run_dir):  claim the run dir (pretrain/rundir.py) -> build data and networks
(pretrain/build.py, pretrain/methods.py) -> resume from run_dir or start -> for each epoch:
train_one_epoch (train_step per batch) -> checkpoint + one log.jsonl line -> export the online
encoder and write the pretrain record (pretrain/export_metadata.py).

The step is `train_step`. BYOL (BYOL v3, Sec. 3.2 and Algorithm 1): loss over both directions,
summed -> backward -> LARS step -> target update with tau_at(step). DINO/SelfPatch (DINO
main_dino.py train_one_epoch): lr and weight decay from the schedule -> multi-crop loss -> backward
(fp16: scaled) -> per-tensor gradient clip -> last layer's gradients dropped in the first epoch(s)
-> AdamW step -> teacher update with the same cosine momentum. Resume is exact: the model,
optimiser, loss scaler, probe, step and RNG states are in the checkpoint (pretrain/state.py), and
each sample's augmentation is drawn from sample_seed(seed, epoch, index) (pretrain/sampling.py), so
the result depends neither on the number of loader workers nor on where the run was interrupted.
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
from pretrain.build import Run, build_run, memory_format, resolve_compile, resolve_precision
from pretrain.config import RUNTIME_FIELDS, PretrainConfig, added_defaults
from pretrain.ema import update_target
from pretrain.export_metadata import export_run
from pretrain.methods import DISPLAY_NAMES, exported_encoder, step_arguments
from pretrain.online_probe import probe_accuracy, probe_step
from pretrain.optimizers import clip_per_tensor, drop_last_layer_gradients, set_step_hyperparameters
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
    config = resolve_precision(config, device)
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


def train_step(run: Run, inputs: tuple, labels: torch.Tensor):
    """One step of the run's method; returns (loss, probe correct count) on device. `inputs`:
    (view_1, view_2) for BYOL (BYOL v3, Algorithm 1), (crops,) for DINO/SelfPatch."""
    step, config = run.step, run.config
    set_step_hyperparameters(run.optimizer, run.schedule.lr(step), run.schedule.weight_decay(step))
    low_precision = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.precision)
    with torch.autocast(run.device.type, dtype=low_precision, enabled=low_precision is not None):
        loss, features = run.model(*inputs, **step_arguments(config, run.schedule, step))
    run.optimizer.zero_grad(set_to_none=True)
    (run.scaler.scale(loss) if run.scaler else loss).backward()
    if run.scaler and (config.clip_grad or step < run.schedule.freeze_last_layer_steps):
        run.scaler.unscale_(run.optimizer)  # clip the true gradients (DINO main_dino.py)
    if config.clip_grad:
        clip_per_tensor(run.network.parameters(), config.clip_grad)
    if step < run.schedule.freeze_last_layer_steps:
        drop_last_layer_gradients(run.network.last_layer_parameters())
    if run.scaler:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    network = run.network
    update_target(network.online_modules(), network.target_modules(), run.schedule.tau(step))
    _, probe_correct = probe_step(run.probe, run.probe_optimizer, features, labels)
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
        inputs, labels = batch_to_device(run, batch)
        loss, probe_correct = train_step(run, inputs, labels)
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
        top1 = step_log.heldout_top1(run.network.online_encoder, run.probe, run.probe_heldout)
        line["online_probe_heldout_top1"] = top1
    step_log.record_line(run.run_dir, line, run.log_sinks)


def batch_to_device(run: Run, batch) -> tuple[tuple, torch.Tensor]:
    """A loader batch -> (the network's inputs, labels) on the run's device; non-blocking copies.
    Inputs: (view_1, view_2) for BYOL's views, (list of crops,) for multi-crop views."""
    layout = memory_format(run.config)
    if run.augment_on == "device":
        view_1, view_2, labels = views_lib.finish_on_device(
            batch, run.device, run.views, *run.stats, layout
        )
        return (view_1, view_2), labels
    *views, labels = batch
    if isinstance(views[0], list):  # multi-crop: ([crop_1, ..., crop_n], labels)
        crops = [crop.to(run.device, non_blocking=True, memory_format=layout) for crop in views[0]]
        return (crops,), labels.to(run.device, non_blocking=True)
    views = tuple(view.to(run.device, non_blocking=True, memory_format=layout) for view in views)
    return views, labels.to(run.device, non_blocking=True)


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
        what=f"{DISPLAY_NAMES[run.config.method]} loss",
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
    dist.check_replicas_agree(run.network.target_modules(), "target network")
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
            run.network.online_encoder, run.probe, run.probe_loader, run.device
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
    log.info("%s pretraining\n%s", DISPLAY_NAMES[run.config.method], json.dumps(header, indent=2))


def export(run: Run) -> Path:
    """Export the encoder the method is evaluated with (pretrain/methods.py exported_encoder: BYOL's
    online one, DINO's teacher) and write the pretrain record (pretrain/export_metadata.py)."""
    return export_run(
        run.run_dir,
        run.config,
        getattr(run.network, exported_encoder(run.config.method)).state_dict(),
        step=run.step,
        steps_per_epoch=run.schedule.steps_per_epoch,
        feature_dim=run.network.feature_dim,
        provenance=provenance(run.device, run.info.world_size),
        wall_seconds=time.monotonic() - run.started,
    )
