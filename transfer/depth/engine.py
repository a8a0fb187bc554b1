"""One depth training run (one LR, one seed) of a depth protocol, resumable, then its test score.

`run_job(job, encoder)` fine-tunes the FCRN network (transfer/depth/models.py) on a copy of
`encoder` for the protocol's steps through THE iteration loop of the dense transfers
(transfer/iterations.py: seeded stream sampling, dropout re-seeded per step, checkpoints to
`<run_dir>/checkpoints/last.pt` every `ckpt_every_min` minutes and at the end), then scores the
test images and writes `<run_dir>/result.json` and each image's pixel sums
(`per_image_sums.npy`, [N, 7], transfer/depth/metrics.py: what the bootstrap interval resamples).
The run directory (pretrain/rundir.py) holds the job's identity: a run dir with a result is
done, one with a checkpoint resumes at its step, one of another job is refused.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pretrain import rundir
from pretrain.identity import settings_identity
from pretrain.sampling import sample_seed
from results.atomic import write_atomic
from results.samples import SAMPLES_FILE
from transfer.depth.augment import DepthAugmentation, eval_view, footprint, train_view
from transfer.depth.data import DepthSet
from transfer.depth.loss import berhu
from transfer.depth.metrics import depth_metrics, pixel_sums, valid_pixels
from transfer.depth.models import build_depth_network
from transfer.depth.protocols import ADDED_FIELDS, DepthProtocol
from transfer.iterations import resume_or_start, set_lr, train_iterations
from transfer.samples import SampleKeeper

log = logging.getLogger(__name__)
PER_IMAGE_FILE = "per_image_sums.npy"  # [N, 7] float64: metrics.pixel_sums of each test image


@dataclass(frozen=True)
class Job:
    """One (LR, seed) depth run and the images it is scored on."""

    protocol: DepthProtocol  # steps/batch already narrowed by the CLI
    lr: float  # the peak LR (protocol.peak_lr unless --lr)
    seed: int
    train_set: DepthSet
    eval_set: DepthSet
    run_dir: Path
    weights_sha256: str
    device: str
    num_workers: int = 4
    ckpt_every_min: float = 10.0
    log_to: str = ""  # --log-to: log.jsonl's step lines also to tensorboard, wandb (not identity)

    def identity(self) -> dict:
        """What must match for a run directory to resume this job."""
        return {
            "protocol": settings_identity(self.protocol, ADDED_FIELDS),
            "lr": self.lr,
            "seed": self.seed,
            "weights_sha256": self.weights_sha256,
            "train": [self.train_set.name, self.train_set.split, self.train_set.fingerprint()],
            "eval": [self.eval_set.name, self.eval_set.split, self.eval_set.fingerprint()],
        }


class TrainViews(Dataset):
    """Training views keyed by (position, index) (pretrain/sampling.py's stream mode)."""

    def __init__(self, images: DepthSet, aug: DepthAugmentation, seed: int) -> None:
        self.images, self.aug, self.seed = images, aug, seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]):
        position, index = key
        image, depth = self.images.load(index)
        return train_view(image, depth, self.aug, sample_seed(self.seed, position, 0))


class TestViews(Dataset):
    """(input, full-resolution depth inside its footprint) per test image; batch size 1."""

    def __init__(self, images: DepthSet, aug: DepthAugmentation) -> None:
        self.images, self.aug = images, aug

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return eval_view(*self.images.load(index), self.aug)

    def original(self, index: int) -> torch.Tensor:
        """The uint8 image [3, h, w] of the region scored (the input's footprint)."""
        image, _ = self.images.load(index)
        top, left, bottom, right = footprint(*image.shape[-2:], self.aug)
        return image[:, top:bottom, left:right]


def predict(model: nn.Module, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Depth [B, h, w] at `size`: the network's output upsampled bilinearly."""
    depth = model(images)  # [B, 1, h', w'] (128x160 for a 228x304 input)
    if depth.shape[-2:] != tuple(size):
        depth = F.interpolate(depth, size=size, mode="bilinear", align_corners=False)
    return depth[:, 0]


def train_step(model, optimizer, images, depths, lr: float) -> float:
    """One SGD step on berHu between the upsampled prediction and the crop's depth (its
    measured pixels); returns the loss. A non-finite loss is not stepped on."""
    set_lr(optimizer, lr)
    prediction = predict(model, images, depths.shape[-2:])
    loss = berhu(prediction, depths, valid_pixels(depths))
    if torch.isfinite(loss):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return loss.item()


def run_job(job: Job, encoder: nn.Module) -> dict:
    """Train and score `job` with a copy of `encoder`; returns (and stores) its result."""
    result_path = job.run_dir / "result.json"
    rundir.claim(job.run_dir, job.identity(), what="depth run")
    if result_path.is_file():
        log.info("%s is finished already; reusing its result", job.run_dir)
        return json.loads(result_path.read_text())
    torch.manual_seed(job.seed)  # the decoder's initialisation
    model = build_depth_network(copy.deepcopy(encoder), dropout=job.protocol.dropout)
    model = model.to(torch.device(job.device))
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=job.lr,
        momentum=job.protocol.momentum,
        weight_decay=job.protocol.weight_decay,
    )
    start, seconds = resume_or_start(model, optimizer, job.run_dir)
    pairs = TrainViews(job.train_set, job.protocol.aug, job.seed)
    seconds = train_iterations(
        model, optimizer, job, start, seconds, pairs, train_step, "depth loss"
    )
    keeper = SampleKeeper("depth")
    sums = evaluate(model, job.eval_set, job, keeper)
    np.save(job.run_dir / PER_IMAGE_FILE, sums)
    steps = job.protocol.iterations
    result = {
        "lr": job.lr,
        "seed": job.seed,
        **depth_metrics(sums),
        "iterations": steps,
        "train_seconds": round(seconds, 3),
        "seconds_per_iteration": round(seconds / max(steps, 1), 4),
        "eval_images": len(job.eval_set),
        "per_image_sums": PER_IMAGE_FILE,
        "samples": keeper.save(job.run_dir / SAMPLES_FILE),  # the report's pictures
    }
    write_atomic(result_path, json.dumps(result, indent=2).encode())
    return result


@torch.no_grad()
def evaluate(
    model: nn.Module, images: DepthSet, job: Job, keeper: SampleKeeper | None = None
) -> np.ndarray:
    """Per-image pixel sums [N, 7] of the model's depth, upsampled to each test image's
    footprint at full resolution (transfer/depth/augment.py:eval_view); `keeper` gets the first
    images as (uint8 region scored, depth, prediction) for the report (transfer/samples.py)."""
    # DEVIATION(depth-footprint): Laina's evaluateNYU.m stretches the prediction of the crop over
    # the whole 480x640 frame; we score the region the crop covers, pixel for pixel.
    views = TestViews(images, job.protocol.aug)
    loader = DataLoader(views, batch_size=1, num_workers=job.num_workers)
    device = torch.device(job.device)
    model.eval()
    sums = []
    for index, (image, truth) in enumerate(tqdm(loader, desc=f"eval {images.split}", unit="img")):
        prediction = predict(model, image.to(device), truth.shape[-2:]).cpu()
        sums.append(pixel_sums(prediction[0], truth[0]))
        if keeper is not None and not keeper.full:
            keeper.keep(views.original(index), truth[0], prediction[0])
    model.train()
    return torch.stack(sums).numpy()
