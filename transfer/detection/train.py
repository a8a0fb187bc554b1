"""The fine-tuning loop of a detector (iterations, SGD or AdamW, detectron2's LR schedule, flips
and the DETR augmentation, fp16 on CUDA where the protocol says so, resumable checkpoints) and its
inference over a test set.

    train(detector, images, protocol, run) -> summary   resumes from run.run_dir/checkpoints/last.pt
    predict(detector, images, device)      -> per-image numpy predictions

Iteration-based like detectron2: iteration i reads the images at positions i*B .. i*B+B-1 of an
endless sequence of seeded per-epoch permutations (pretrain/sampling.py, stream mode), and flips
each with p 0.5 drawn from sample_seed(seed, position, index); the DETR augmentation
(protocol resize "detr", detr_augment.py) continues drawing from the same generator. So the data
order depends only on (seed, iteration): a resumed run reads exactly what the uninterrupted run
would have read. The run directory (pretrain/rundir.py) holds the run's identity in config.json
(a run dir that holds another run is refused, naming the differing fields) and checkpoints
(atomic, digest, last.pt + previous.pt) with the detector, optimizer, loss scaler, iteration and
torch RNG (the multi-scale size draws, drop path). Epoch-based protocols (SelfPatch's 12 epochs)
become iterations over the training set's size (protocols.in_iterations), logged in the summary.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pretrain import rundir
from pretrain.sampling import SeededBatches, sample_seed
from pretrain.step_log import open_trainer_log
from transfer.detection.detr_augment import detr_augment
from transfer.detection.optim import build_optimizer, loss_scaler
from transfer.detection.protocols import Protocol, in_iterations

log = logging.getLogger(__name__)
LOG_EVERY = 20  # iterations between lines of log.jsonl


@dataclass(frozen=True)
class RunSettings:
    """Where and how one fine-tuning run goes (not part of the protocol)."""

    run_dir: Path
    identity: dict  # everything that must match for a resume (protocol, weights, seed)
    device: torch.device
    seed: int = 0
    num_workers: int = 4
    ckpt_every_min: float = 10.0  # and at the last iteration
    max_iters: int | None = None  # stop early (smoke runs); None: the protocol's max_iters
    log_to: str = ""  # --log-to: log.jsonl's step lines also to tensorboard, wandb


def iteration_batches(size: int, protocol: Protocol, seed: int, start: int, stop: int):
    """The sampler of iterations start..stop-1: (position, index) keys (pretrain/sampling.py)."""
    sampler = SeededBatches(size, protocol.batch_size, seed, last="stream")
    sampler.set_steps(start, stop)
    return sampler


class FlipView(Dataset):
    """dataset[(position, index)]: the item, mirrored left-right (boxes and masks too) with p 0.5
    drawn from sample_seed(seed, position, index) when `flip`; then `augment(image, target,
    generator)` when given, drawing from the same generator (the DETR augmentation)."""

    def __init__(self, dataset: Dataset, seed: int, flip: bool, augment=None) -> None:
        self.dataset, self.seed, self.flip, self.augment = dataset, seed, flip, augment

    def __len__(self) -> int:
        return len(self.dataset)

    def generator(self, position: int, index: int) -> torch.Generator:
        return torch.Generator().manual_seed(sample_seed(self.seed, position, index))

    def _flip_draw(self, generator: torch.Generator) -> bool:
        return self.flip and bool(torch.rand((), generator=generator) < 0.5)

    def __getitem__(self, key: tuple[int, int]):
        image, target = self.dataset[key[1]]
        generator = self.generator(*key)
        if self._flip_draw(generator):
            width = image.shape[-1]
            image = image.flip(-1)
            boxes = target["boxes"].clone()
            boxes[:, 0], boxes[:, 2] = width - target["boxes"][:, 2], width - target["boxes"][:, 0]
            target["boxes"] = boxes
            if "masks" in target:
                target["masks"] = target["masks"].flip(-1)
        if self.augment is not None:
            image, target = self.augment(image, target, generator)
        return image, target


def collate(batch: list) -> tuple[list, list]:
    images, targets = zip(*batch)
    return list(images), list(targets)


def train(detector: nn.Module, images: Dataset, protocol: Protocol, run: RunSettings) -> dict:
    """Fine-tune `detector` in place up to max_iters (resuming); returns the record's summary."""
    protocol = in_iterations(protocol, len(images))
    stop = min(run.max_iters or protocol.max_iters, protocol.max_iters)
    rundir.claim(run.run_dir, run.identity, what="detection run")
    optimizer = build_optimizer(detector, protocol)
    scaler = loss_scaler(protocol, run.device)
    start = _resume(detector, optimizer, scaler, run)
    detector.to(run.device).train()
    loader = _loader(images, protocol, run, start, stop)
    last_save, timings, losses = time.monotonic(), [], {}
    bar = tqdm(
        total=stop, initial=start, desc=f"train {protocol.name}", unit="it", dynamic_ncols=True
    )
    settings = {"protocol": protocol.name, "seed": run.seed, "max_iters": stop}
    step_log = open_trainer_log(run.run_dir, run.log_to, settings, every=LOG_EVERY)
    tick = time.monotonic()
    for iteration, (batch_images, targets) in enumerate(loader, start=start):
        lr = protocol.lr(iteration)
        loss, loss_dict = train_step(
            detector, optimizer, batch_images, targets, lr, run.device, scaler
        )
        rundir.check_finite(loss, step=iteration, lr=lr, run_dir=run.run_dir, what="detection loss")
        now = time.monotonic()
        timings.append(now - tick)
        tick, done = now, iteration + 1
        losses = {name: value.item() for name, value in loss_dict.items()}
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}")
        line = {"loss": loss, "lr": lr, **losses, "seconds_per_iter": timings[-1]}
        step_log.step(done, last=done == stop, **line)
        if done == stop or rundir.checkpoint_due(last_save, run.ckpt_every_min):
            _save(detector, optimizer, scaler, done, run)
            last_save = time.monotonic()
    bar.close()
    step_log.close()
    steady = timings[1:] or timings  # the first iteration carries warm-up costs
    return {
        "iterations_run": len(timings),
        "iterations_done": max(stop, start),
        "resumed_from": start,
        "seconds_per_iter": float(np.mean(steady)) if steady else None,
        "final_losses": losses,
        "schedule": {"max_iters": protocol.max_iters, "lr_steps": list(protocol.lr_steps)},
        "precision": "fp16" if scaler.is_enabled() else "fp32",
    }


def train_step(detector, optimizer, batch_images, targets, lr: float, device, scaler=None) -> tuple:
    """One optimizer step at learning rate `lr` on the summed detector losses; (loss, loss
    dict). With an enabled `scaler`, the forward runs under fp16 autocast and the loss is scaled.

    A non-finite loss is not stepped on: the caller stops before anything is saved."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    fp16 = scaler is not None and scaler.is_enabled()
    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=fp16):
        loss, loss_dict = _losses(detector, batch_images, targets, device)
    if not torch.isfinite(loss):
        return loss.item(), loss_dict
    optimizer.zero_grad(set_to_none=True)
    if fp16:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss.item(), loss_dict


def _loader(images: Dataset, protocol: Protocol, run: RunSettings, start: int, stop: int):
    """Batches of iterations start..stop-1, flipped (and DETR-augmented) per (seed, position)."""
    augment = None
    if protocol.resize == "detr":
        augment = partial(detr_augment, sizes=protocol.train_sizes, max_size=protocol.max_size)
    return DataLoader(
        FlipView(images, run.seed, protocol.flip, augment),
        batch_sampler=iteration_batches(len(images), protocol, run.seed, start, stop),
        collate_fn=collate,
        num_workers=run.num_workers,
        pin_memory=run.device.type == "cuda",
        generator=torch.Generator().manual_seed(run.seed),  # leaves the global RNG alone
    )


def _losses(detector: nn.Module, batch_images, targets, device: torch.device):
    """The batch on `device` through the detector in train mode: (summed loss, loss dict)."""
    batch_images = [image.to(device, non_blocking=True) for image in batch_images]
    targets = [{k: _to(v, device) for k, v in t.items()} for t in targets]
    loss_dict = detector(batch_images, targets)
    return sum(loss_dict.values()), loss_dict


def _to(value, device: torch.device):
    return value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value


def _resume(detector: nn.Module, optimizer, scaler, run: RunSettings) -> int:
    state = rundir.resume(run.run_dir)
    if state is None:
        return 0
    detector.load_state_dict(state["model"], strict=True)
    optimizer.load_state_dict(state["optimizer"])
    if scaler.is_enabled() and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"])
    log.info("resuming detection fine-tuning at iteration %d", state["step"])
    return int(state["step"])


def _save(detector: nn.Module, optimizer, scaler, iteration: int, run: RunSettings) -> None:
    state = {
        "model": {k: v.detach().cpu() for k, v in detector.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "step": iteration,
        "rng": torch.get_rng_state(),
    }
    rundir.save(run.run_dir, state)


@torch.no_grad()
def precise_bn(detector: nn.Module, images: Dataset, protocol: Protocol, run: RunSettings) -> int:
    """Replace the running statistics of every trained BN layer by their plain average over
    `protocol.precise_bn_iters` training batches (detectron2's TEST.PRECISE_BN, fvcore
    update_bn_stats); returns the number of BN layers updated (0 with frozen BN: nothing to do).

    The batches continue the training sequence (positions after the last iteration), so the
    result depends only on (seed, max_iters); run after training, before testing. A run shortened
    by `run.max_iters` uses at most that many batches here too (smoke runs stay short).
    """
    protocol = in_iterations(protocol, len(images))
    norms = [m for m in detector.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or protocol.precise_bn_iters < 1:
        return 0
    stop = min(run.max_iters or protocol.max_iters, protocol.max_iters)
    count = min(protocol.precise_bn_iters, run.max_iters or protocol.precise_bn_iters)
    loader = _loader(images, protocol, run, stop, stop + count)
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: the mean of the per-batch statistics
    detector.to(run.device).train()
    for batch_images, targets in tqdm(loader, desc="precise BN", unit="it", dynamic_ncols=True):
        batch_images = [image.to(run.device, non_blocking=True) for image in batch_images]
        detector(batch_images, [{k: _to(v, run.device) for k, v in t.items()} for t in targets])
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    return len(norms)


@torch.no_grad()
def predict(
    detector: nn.Module,
    images: Dataset,
    device: torch.device,
    num_workers: int = 0,
    desc: str = "predict",
) -> list[dict]:
    """Per image: numpy "boxes" [N, 4] (input-image coordinates), "labels", "scores" (+ "masks"
    [N, H, W] bool at 0.5, Mask R-CNN)."""
    detector.to(device).eval()
    loader = DataLoader(images, batch_size=1, collate_fn=collate, num_workers=num_workers)
    predictions = []
    for batch_images, _ in tqdm(loader, desc=desc, unit="img", dynamic_ncols=True):
        (output,) = detector([batch_images[0].to(device)])
        prediction = {key: output[key].cpu().numpy() for key in ("boxes", "labels", "scores")}
        if "masks" in output:
            prediction["masks"] = (output["masks"][:, 0] > 0.5).cpu().numpy()
        predictions.append(prediction)
    return predictions
