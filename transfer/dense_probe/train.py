"""Train the dense probes on cached feature maps: every candidate LR at once, chosen on held-out
training images, retrained on all of train, scored on the reported split.

One loop for every target: a `DenseTask` says what differs (the heads, one head's loss, the
additive per-image statistics and the metrics they give, the metric that chooses the LR).
`segmentation_task` is per-pixel cross-entropy (IGNORE = 255 left out) with mIoU;
`depth_task` takes the loss and the metrics as callables (DINOv2's NYU linear config uses SigLoss
+ 0.5 GradientLoss, the issue-17 facts sheet "depth-nyu", §7; the transfer.depth package's loss
and metrics modules provide them).
A head's output is resized bilinearly to the target's size before its loss and its scores, as
mmseg's / DINOv2's decode heads do.

Optimisation (`ProbeSchedule`): DINOv2's linear segmentation config (the issue-17 facts sheet
"depth-nyu", §7, from the third-party copies of dinov2_vitb14_ade20k_linear_config.py): AdamW,
weight decay 1e-4, betas (0.9, 0.999) (mmcv's AdamW default), poly decay with power 1 to 0 after
mmcv's linear warm-up (1,500 of 40,000 iterations, warm-up ratio 1e-6), batch 16 (2 per GPU x 8). On
cached features the iterations become epochs over the training images: the same number of samples
seen (40,000 x 16 = 640,000), so the warm-up is the same 3.75% of all steps (OUR equivalence; the
presets in protocols.py state the epochs). DINOv2 trains one LR (1e-3); we sweep a grid around it
(protocols.py) in one pass, as evaluate/heads.py does for the classification probe.
The depth probe's `nyu_depth_schedule` is DINOv2's NYU linear config in the same way (AdamW,
weight decay 0.01, a third of the steps of warm-up, then cosine).

Batches come from pretrain/sampling.py:SeededBatches (keep mode: the last batch may be smaller),
so the order depends only on (seed, epoch). A head diverged when its weights or its loss became
non-finite (its loss then steps no further) or its mean loss over the last epoch ended above its
loss at the first step (OUR rule): it is reported with no score and never chosen.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pretrain.sampling import SeededBatches
from pretrain.step_log import TrainerLog
from results.errors import ByolBenchError
from transfer.dense_probe.features import DenseFeatures
from transfer.dense_probe.heads import DepthBinProbes, SegmentationProbes, upsample_to
from transfer.segmentation.augment import IGNORE
from transfer.segmentation.metrics import confusion, image_counts, mean_iou_of_counts

log = logging.getLogger(__name__)


class ProbeDivergedError(ByolBenchError, RuntimeError):
    """Every candidate LR diverged; the message says what to change."""


@dataclass(frozen=True)
class ProbeSchedule:
    """Optimiser and schedule of the probe heads (see the module docstring for sources)."""

    epochs: int
    batch_size: int = 16  # DINOv2 linear seg: 2 images/GPU x 8 GPUs
    weight_decay: float = 1e-4  # DINOv2 linear seg config, AdamW
    betas: tuple[float, float] = (0.9, 0.999)  # torch/mmcv AdamW default
    warmup_fraction: float = 1_500 / 40_000  # DINOv2 linear seg: 1,500 warm-up of 40k iterations
    warmup_ratio: float = 1e-6  # mmcv linear warm-up starts at ratio x LR
    decay: str = "poly"  # "poly" (DINOv2 linear seg) | "cosine" (DINOv2 NYU linear depth)
    poly_power: float = 1.0  # DINOv2 linear seg: poly, power 1, min_lr 0


def nyu_depth_schedule(train_images: int) -> ProbeSchedule:
    """DINOv2's NYU linear-depth optimisation (facts sheet "depth-nyu", §7, from a third-party
    copy of its config): AdamW, weight decay 0.01, batch 16 (2/GPU x 8, GPU count unverified),
    linear warm-up over 12,800 of 38,400 iterations, then cosine (to 0: ours, the minimum is not
    stated); as epochs over `train_images` cached images with the same 38,400 x 16 samples seen
    (OUR equivalence, at least one epoch). DINOv2's LR is 5e-3 (a grid around it: the caller's)."""
    epochs = max(1, round(38_400 * 16 / train_images))
    return ProbeSchedule(
        epochs=epochs, weight_decay=0.01, warmup_fraction=12_800 / 38_400, decay="cosine"
    )


def probe_lr(step: int, total_steps: int, peak_lr: float, schedule: ProbeSchedule) -> float:
    """The LR at `step`: mmcv's PolyLrUpdaterHook (peak (1 - step/total)^power) or
    CosineAnnealingLrUpdaterHook to 0 (peak (1 + cos(pi step/total)) / 2), times mmcv's linear
    warm-up factor 1 - (1 - step/warmup)(1 - ratio) during the warm-up."""
    progress = min(step, total_steps) / total_steps
    if schedule.decay == "poly":
        regular = peak_lr * (1 - progress) ** schedule.poly_power
    elif schedule.decay == "cosine":
        regular = peak_lr * (1 + math.cos(math.pi * progress)) / 2
    else:
        raise ValueError(f"unknown decay {schedule.decay!r}; use poly or cosine")
    warmup_steps = round(schedule.warmup_fraction * total_steps)
    if step >= warmup_steps:
        return regular
    return regular * (1 - (1 - step / warmup_steps) * (1 - schedule.warmup_ratio))


@dataclass(frozen=True)
class DenseTask:
    """What differs between probe targets; everything else is one loop."""

    name: str  # "seg" | "depth"
    make_probes: Callable[[int, int], torch.nn.Module]  # (num_heads, seed) -> probes
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (output, target) of one head
    image_stats: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # -> additive [B, ...]
    metrics: Callable[[torch.Tensor], dict]  # summed image_stats -> {name: value}
    select: str  # the metric that chooses the LR
    higher_is_better: bool
    predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # -> [B, H, W] at the target's
    target_dtype: type = np.uint8  # how the targets are cached


def segmentation_task(channels: int, num_classes: int) -> DenseTask:
    """BN + 1x1 conv probes, per-pixel cross-entropy (IGNORE left out), mIoU (%)."""

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = upsample_to(logits, labels.shape[-2:])  # [B, K, H, W]
        return F.cross_entropy(logits, labels.long(), ignore_index=IGNORE)

    def image_stats(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        predictions = upsample_to(logits, labels.shape[-2:]).argmax(1).cpu()  # [B, H, W]
        return torch.stack(
            [
                image_counts(confusion(label.long(), prediction, num_classes))
                for label, prediction in zip(labels.cpu(), predictions)
            ]
        )  # [B, 3, K]

    return DenseTask(
        name="seg",
        make_probes=lambda heads, seed: SegmentationProbes(heads, channels, num_classes, seed),
        loss=loss,
        image_stats=image_stats,
        metrics=lambda counts: {"miou": 100.0 * mean_iou_of_counts(counts)},
        select="miou",
        higher_is_better=True,
        predict=lambda logits, labels: upsample_to(logits, labels.shape[-2:]).argmax(1),
    )


def depth_task(
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    pixel_sums: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    depth_metrics: Callable[[torch.Tensor], dict],
    *,
    channels: int,
    bins: int = 256,
    min_depth: float = 1e-3,
    max_depth: float = 10.0,
    select: str = "rms",
) -> DenseTask:
    """DepthBinProbes; loss_fn(prediction, target, valid) -> scalar, pixel_sums(prediction,
    target, valid) -> additive sums of one image, depth_metrics(summed sums) -> dict. Valid
    pixels: finite ground truth > 0 (DINOv2's SigLoss masks depth_gt > min_depth; ours: > 0).
    The LR is chosen on the lowest `select` (rms: DINOv2 reports RMSE)."""

    def valid_of(depth: torch.Tensor) -> torch.Tensor:
        return torch.isfinite(depth) & (depth > 0)

    def loss(prediction: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        prediction = upsample_to(prediction, depth.shape[-2:])[:, 0]  # [B, H, W]
        return loss_fn(prediction, depth, valid_of(depth))

    def image_stats(prediction: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        prediction = upsample_to(prediction, depth.shape[-2:])[:, 0]
        return torch.stack(
            [
                torch.as_tensor(pixel_sums(p, d, valid_of(d))).cpu()
                for p, d in zip(prediction, depth)
            ]
        )

    return DenseTask(
        name="depth",
        make_probes=lambda heads, seed: DepthBinProbes(
            heads, channels, bins, min_depth, max_depth, seed
        ),
        loss=loss,
        image_stats=image_stats,
        metrics=depth_metrics,
        select=select,
        higher_is_better=False,
        predict=lambda prediction, depth: upsample_to(prediction, depth.shape[-2:])[:, 0],
        target_dtype=np.float32,
    )


def feature_batch(
    data: DenseFeatures, indices: np.ndarray, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 features [B, C, h, w], targets [B, H, W]) of `indices` (read in file order)."""
    index = np.sort(indices)
    features = torch.from_numpy(np.ascontiguousarray(data.features[index])).to(device).float()
    return features, torch.from_numpy(np.ascontiguousarray(data.targets[index])).to(device)


def fit_probes(
    task: DenseTask,
    data: DenseFeatures,
    indices: np.ndarray,
    lrs: Sequence[float],
    schedule: ProbeSchedule,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    desc: str = "dense probe",
    log: TrainerLog | None = None,
) -> tuple[torch.nn.Module, list[dict]]:
    """Train one head per LR on the images `indices` of `data`; (probes, per-head training
    summary {final_loss, diverged}). `log` (--log-to) gets the first head's loss and LR."""
    probes = task.make_probes(len(lrs), seed).to(device).train()
    groups = [{"params": head.parameters(), "lr": lr} for head, lr in zip(probes.heads, lrs)]
    optimizer = torch.optim.AdamW(
        groups, lr=lrs[0], betas=schedule.betas, weight_decay=schedule.weight_decay
    )
    sampler = SeededBatches(len(indices), schedule.batch_size, seed, last="keep")
    total = schedule.epochs * sampler.steps_per_epoch
    first, last_epoch = [math.nan] * len(lrs), [[] for _ in lrs]
    alive, step, started = [True] * len(lrs), 0, time.monotonic()
    bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)
    for epoch in range(schedule.epochs):
        sampler.set_epoch(epoch)
        last_epoch = [[] for _ in lrs]
        for keys in sampler:
            features, targets = feature_batch(data, indices[[index for _, index in keys]], device)
            for group, lr in zip(optimizer.param_groups, lrs):
                group["lr"] = probe_lr(step, total, lr, schedule)
            losses = _step(task, probes, optimizer, features, targets, alive)
            for i, value in enumerate(losses):
                first[i] = value if step == 0 else first[i]
                last_epoch[i].append(value)
            step += 1
            bar.update(1)
            if log is not None:
                log.step(step, last=step == total, loss=losses[0], lr=groups[0]["lr"])
            rate = step * schedule.batch_size / max(time.monotonic() - started, 1e-9)
            bar.set_postfix(
                loss=f"{losses[0]:.4f}", lr=f"{groups[0]['lr']:.3g}", img_s=f"{rate:.0f}"
            )
    bar.close()
    summary = []
    for i, finite in enumerate(probes.finite()):
        final = float(np.mean(last_epoch[i])) if last_epoch[i] else math.nan
        diverged = not (finite and alive[i] and math.isfinite(final) and final <= first[i])
        summary.append(
            {"final_loss": None if not math.isfinite(final) else final, "diverged": diverged}
        )
    return probes, summary


def _step(task, probes, optimizer, features, targets, alive: list[bool]) -> list[float]:
    """One AdamW step of every live head: each head's loss backpropagated on its own (the sum's
    gradient, one head's full-resolution output in memory at a time). A head whose loss is not
    finite gets no gradient (AdamW skips it) and is marked dead."""
    optimizer.zero_grad(set_to_none=True)
    prepared = probes.prepare(features)
    losses = []
    for i in range(len(probes.heads)):
        if not alive[i]:
            losses.append(math.nan)
            continue
        loss = task.loss(probes.head_forward(i, prepared), targets)
        if not torch.isfinite(loss):
            alive[i] = False
            losses.append(math.nan)
            continue
        loss.backward()
        losses.append(loss.item())
    optimizer.step()
    return losses


@torch.no_grad()
def per_image_stats(
    task: DenseTask, probes, data: DenseFeatures, indices: np.ndarray, batch_size: int, device
) -> list[torch.Tensor]:
    """Per head, task.image_stats of every image in `indices` ([N, ...], in index order)."""
    probes.eval()
    per_head = [[] for _ in probes.heads]
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        features, targets = feature_batch(data, chunk, device)
        order = np.argsort(np.argsort(chunk))  # feature_batch reads sorted: back to `indices` order
        prepared = probes.prepare(features)
        for i in range(len(probes.heads)):
            stats = task.image_stats(probes.head_forward(i, prepared), targets)
            per_head[i].append(stats[torch.from_numpy(order)])
    probes.train()
    return [torch.cat(chunks) for chunks in per_head]


def sweep_lrs(
    task: DenseTask,
    train: DenseFeatures,
    heldout: np.ndarray,
    lrs: Sequence[float],
    schedule: ProbeSchedule,
    *,
    seed: int,
    device,
    log: TrainerLog | None = None,
) -> tuple[float, list[dict]]:
    """(best LR, candidates): every head trained on train minus `heldout` (indices into
    `train`), scored on the held-out images; diverged heads have no score and are never chosen."""
    sweep = np.setdiff1d(np.arange(len(train)), heldout)
    probes, summary = fit_probes(
        task, train, sweep, lrs, schedule, seed=seed, device=device, desc="probe sweep", log=log
    )
    stats = per_image_stats(task, probes, train, heldout, schedule.batch_size, device)
    score, candidates = f"heldout_{task.select}", []
    for lr, trained, one in zip(lrs, summary, stats):
        value = None if trained["diverged"] else task.metrics(one.sum(0))[task.select]
        candidates.append({"lr": lr, score: value, **trained})
    live = [c for c in candidates if c[score] is not None]
    if not live:
        raise ProbeDivergedError(
            f"every candidate LR ({', '.join(f'{lr:g}' for lr in lrs)}) diverged; pass "
            "smaller values with --lrs"
        )
    sign = 1.0 if task.higher_is_better else -1.0
    return max(live, key=lambda c: sign * c[score])["lr"], candidates


def run_probe(
    task: DenseTask,
    train: DenseFeatures,
    evaluated: DenseFeatures,
    heldout: np.ndarray,
    lrs: Sequence[float],
    schedule: ProbeSchedule,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    heldout_name: str = "heldout",
    on_final: Callable[[torch.nn.Module], None] | None = None,
    open_log: Callable[[str], TrainerLog | None] = lambda phase: None,
) -> tuple[dict, dict, torch.Tensor]:
    """(metrics, selection, per-image stats of `evaluated`): with several LRs the best on the
    held-out images (sweep_lrs) is chosen, then retrained on all of train (as evaluate/linear.py
    retrains the classification probe) and scored on `evaluated`. One LR: no sweep ("given").
    `on_final(probes)` sees the retrained probe (the report's sample pictures); `open_log(phase)`
    gives the TrainerLog of "sweep" and "final" (--log-to), or None."""
    candidates, best, chosen_on = [], lrs[0], "given"
    if len(lrs) > 1:
        sweep_log = open_log("sweep")
        best, candidates = sweep_lrs(
            task, train, heldout, lrs, schedule, seed=seed, device=device, log=sweep_log
        )
        _close(sweep_log)
        chosen_on = heldout_name
    probes, (trained,) = fit_probes(
        task,
        train,
        np.arange(len(train)),
        [best],
        schedule,
        seed=seed,
        device=device,
        desc=f"probe lr {best:g}",
        log=(final_log := open_log("final")),
    )
    _close(final_log)
    if trained["diverged"]:
        raise ProbeDivergedError(
            f"the probe diverged at lr {best:g}; pass a smaller one with --lrs"
        )
    (stats,) = per_image_stats(task, probes, evaluated, np.arange(len(evaluated)), 16, device)
    if on_final is not None:
        on_final(probes)
    selection = {
        "lr": best,
        "chosen_on": chosen_on,
        "candidates": candidates,
        "retrained_on": "train (all images, held-out included)",
        "final_train_loss": trained["final_loss"],
        "epochs": schedule.epochs,
        "steps_per_epoch": -(-len(train) // schedule.batch_size),
    }
    return task.metrics(stats.sum(0)), selection, stats


def _close(log: TrainerLog | None) -> None:
    if log is not None:
        log.close()
