"""One segmentation training run (one LR, one seed) on torchvision-style modules, resumable.

`run_job(job)` trains the protocol's segmenter for `job.iterations` steps (SGD or AdamW), saving
`<job.run_dir>/checkpoints/last.pt` every `ckpt_every_min` minutes and at the end
(pretrain/checkpoint.py: atomic, tensors only, digest-checked), then evaluates mIoU on
`job.eval_set` and writes `<job.run_dir>/result.json`, beside samples.npz (the first test
images with label and prediction, for the report: transfer/samples.py). The run directory
(pretrain/rundir.py) holds the job's identity in config.json: a run dir with a result is done,
one with a checkpoint resumes at its iteration, and one of a different job is refused with the
differing fields named.
Data draws depend only on (seed, sample position) (pretrain/sampling.py, stream mode) and dropout
is re-seeded every iteration, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pretrain import rundir
from pretrain.identity import settings_identity
from results.atomic import write_atomic
from results.samples import SAMPLES_FILE
from transfer.iterations import resume_or_start, set_lr, train_iterations
from transfer.samples import SampleKeeper
from transfer.segmentation.augment import IGNORE, Augmentation
from transfer.segmentation.data import EvalPairs, SegmentationSet, TrainPairs
from transfer.segmentation.metrics import confusion, image_counts, mean_iou, per_class_iou
from transfer.segmentation.models import build_segmenter
from transfer.segmentation.protocols import ADDED_FIELDS, SegmentationProtocol
from transfer.vit_param_groups import vit_param_groups

log = logging.getLogger(__name__)
PER_IMAGE_FILE = "per_image_counts.npy"  # [N, 3, K] int64: metrics.image_counts of each image


@dataclass(frozen=True)
class Job:
    """One (LR, seed) training run and the split it is evaluated on."""

    protocol: SegmentationProtocol  # iterations/batch/crop already narrowed by the CLI
    lr: float
    seed: int
    train_set: SegmentationSet
    eval_set: SegmentationSet
    run_dir: Path
    weights_sha256: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: str
    num_workers: int = 4
    ckpt_every_min: float = 10.0  # minutes between checkpoints (and at the last iteration)
    log_to: str = ""  # --log-to: log.jsonl's step lines also to tensorboard, wandb (not identity)

    def identity(self) -> dict:
        """What must match for a run directory to resume this job."""
        return {
            "protocol": settings_identity(self.protocol, ADDED_FIELDS),
            "lr": self.lr,
            "seed": self.seed,
            "weights_sha256": self.weights_sha256,
            "train": [self.train_set.split, self.train_set.fingerprint()],
            "eval": [self.eval_set.split, self.eval_set.fingerprint()],
        }


def augmentation(job: Job) -> Augmentation:
    """The training/test transform settings of the job's protocol."""
    p = job.protocol
    return Augmentation(
        p.crop, p.scale_range, p.base_size, job.mean, job.std, p.cat_max_ratio, p.photometric
    )


def run_job(job: Job, encoder: nn.Module) -> dict:
    """Train and evaluate `job` with a copy of `encoder`; returns (and stores) its result."""
    result_path = job.run_dir / "result.json"
    rundir.claim(job.run_dir, job.identity(), what="segmentation run")
    if result_path.is_file():
        log.info("%s is finished already; reusing its result", job.run_dir)
        return json.loads(result_path.read_text())
    device = torch.device(job.device)
    torch.manual_seed(job.seed)  # head initialisation
    model = build_segmenter(
        job.protocol.head, copy.deepcopy(encoder), job.train_set.num_classes, job.protocol
    ).to(device)
    optimizer = build_optimizer(model, job.protocol, job.lr)
    start, seconds = resume_or_start(model, optimizer, job.run_dir)
    seconds = train(model, optimizer, job, start, seconds)
    keeper = SampleKeeper("segmentation")
    matrix, counts = evaluate(model, job.eval_set, job, keeper)
    np.save(job.run_dir / PER_IMAGE_FILE, counts.numpy())  # for the bootstrap interval
    iterations = job.protocol.iterations
    result = {
        "lr": job.lr,
        "seed": job.seed,
        "miou": 100.0 * mean_iou(matrix),
        "per_class_iou": [
            None if v != v else round(100 * v, 4) for v in per_class_iou(matrix).tolist()
        ],
        "iterations": iterations,
        "train_seconds": round(seconds, 3),
        "seconds_per_iteration": round(seconds / max(iterations, 1), 4),
        "eval_split": job.eval_set.split,
        "eval_images": len(job.eval_set),
        "per_image_counts": PER_IMAGE_FILE,
        "samples": keeper.save(job.run_dir / SAMPLES_FILE),  # the report's pictures
    }
    write_atomic(result_path, json.dumps(result, indent=2).encode())
    return result


def build_optimizer(
    model: nn.Module, protocol: SegmentationProtocol, lr: float
) -> torch.optim.Optimizer:
    """The protocol's optimizer over parameter_groups: SGD with momentum, or AdamW with betas."""
    groups = parameter_groups(model, protocol)
    if protocol.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=protocol.momentum)
    if protocol.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=protocol.betas)
    raise ValueError(f"unknown optimizer {protocol.optimizer!r}; use sgd or adamw")


def parameter_groups(model: nn.Module, protocol: SegmentationProtocol) -> list[dict]:
    """All parameters with the protocol's weight decay. AdamW protocols: none on parameters
    whose name holds one of `no_decay_keys` (mmcv custom_keys, transfer/vit_param_groups.py);
    SGD protocols: none on BN's when norm_weight_decay is False (mmseg's norm_decay_mult=0)."""
    if protocol.optimizer == "adamw":
        return vit_param_groups(model, protocol.weight_decay, protocol.no_decay_keys)
    norm, other = [], []
    for module in model.modules():
        params = [p for p in module.parameters(recurse=False) if p.requires_grad]
        (norm if isinstance(module, nn.modules.batchnorm._BatchNorm) else other).extend(params)
    norm_decay = protocol.weight_decay if protocol.norm_weight_decay else 0.0
    return [
        {"params": other, "weight_decay": protocol.weight_decay},
        {"params": norm, "weight_decay": norm_decay},
    ]


def train(
    model: nn.Module, optimizer: torch.optim.Optimizer, job: Job, start: int, seconds: float
) -> float:
    """Training from iteration `start` to the end on the job's training views
    (transfer/iterations.py), checkpointing; returns the training seconds so far."""
    pairs = TrainPairs(job.train_set, augmentation(job), job.seed)
    step = partial(train_step, loss_mean=job.protocol.loss_mean)
    return train_iterations(model, optimizer, job, start, seconds, pairs, step, "segmentation loss")


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    lr: float,
    loss_mean: str = "labelled",
) -> float:
    """One step on per-pixel cross-entropy (IGNORE pixels add nothing) at `lr`, plus
    aux_weight x the auxiliary head's (UperNet); returns the loss. A non-finite loss is not
    stepped on: the caller stops before anything is saved."""
    set_lr(optimizer, lr)
    outputs = model(images)  # [B, K, crop, crop], or (logits, auxiliary logits)
    logits, auxiliary = outputs if isinstance(outputs, tuple) else (outputs, None)
    loss = pixel_loss(logits, labels, loss_mean)
    if auxiliary is not None:
        loss = loss + model.aux_weight * pixel_loss(auxiliary, labels, loss_mean)
    if torch.isfinite(loss):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return loss.item()


def pixel_loss(logits: torch.Tensor, labels: torch.Tensor, mean: str) -> torch.Tensor:
    """Cross-entropy summed over the labelled pixels, divided by their number ("labelled",
    PyTorch's ignore_index mean) or by all pixels ("all": mmseg's CrossEntropyLoss with its
    default avg_non_ignore=False, where IGNORE pixels count in the denominator)."""
    if mean == "labelled":
        return F.cross_entropy(logits, labels, ignore_index=IGNORE)
    if mean == "all":
        return (
            F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="sum") / labels.numel()
        )
    raise ValueError(f"unknown loss mean {mean!r}; use labelled or all")


@torch.no_grad()
def evaluate(
    model: nn.Module, images: SegmentationSet, job: Job, keeper: SampleKeeper | None = None
) -> tuple:
    """Confusion matrix [K, K] of the model's argmax over `images` (one image per batch), and
    each image's metrics.image_counts [N, 3, K] (int64); `keeper` gets the first images as
    (uint8 image as scored, label, argmax) for the report (transfer/samples.py)."""
    protocol, device = job.protocol, torch.device(job.device)
    pairs = EvalPairs(images, augmentation(job), protocol.test_crop)
    loader = torch.utils.data.DataLoader(pairs, batch_size=1, num_workers=job.num_workers)
    model.eval()
    matrix = torch.zeros(images.num_classes, images.num_classes, dtype=torch.int64)
    counts = []
    for index, (image, label) in enumerate(tqdm(loader, desc=f"eval {images.split}", unit="img")):
        logits = model(image.to(device))  # [1, K, h, w]
        if logits.shape[-2:] != label.shape[-2:]:  # rescaled input: back to the label's size
            logits = F.interpolate(
                logits, size=label.shape[-2:], mode="bilinear", align_corners=False
            )
        prediction = logits[0].argmax(0).cpu()  # [h, w] int64
        one = confusion(label[0], prediction, images.num_classes)
        if keeper is not None and not keeper.full:
            # the original pixels at the label's size (pairs.original), not the normalised,
            # possibly rescaled network input: what the label and the prediction describe
            keeper.keep(pairs.original(index)[0], label[0], prediction)
        matrix += one
        counts.append(image_counts(one))
    model.train()
    return matrix, torch.stack(counts)
