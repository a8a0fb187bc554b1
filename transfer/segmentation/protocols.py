"""Named, versioned segmentation protocols: every setting of a run, stated with its source.

A protocol's `name` is what result records carry in `task.protocol`; results/tables.py never puts
two protocols in one column. Change a setting -> bump the version. `--max-steps`, `--lrs`,
`--seeds`, `--crop` and `--batch-size` shorten or narrow a run for smoke tests; the record's
config then holds the values actually run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from pretrain.schedule import poly, step_decay
from results.published import SEGMENTATION_PROTOCOL


@dataclass(frozen=True)
class SegmentationProtocol:
    """Every setting of one segmentation protocol (see the preset functions for sources)."""

    name: str  # task.protocol, "<name>/<version>"
    dataset: str  # "voc2012" | "ade20k"
    train_split: str
    eval_split: str  # reported split
    head: str  # "fcn" | "semfpn" (transfer/segmentation/models.py)
    iterations: int
    batch_size: int
    crop: int  # square training crop, px
    test_crop: int | None  # centre crop at test (None: the whole image)
    scale_range: tuple[float, float]  # random rescale factors of the base size
    base_size: tuple[int, int] | None  # (long, short) keep-ratio base; None: the image's size
    lrs: tuple[float, ...]  # candidates; more than one -> chosen on `heldout` training images
    schedule: str  # "step": x0.1 at each milestone fraction; "poly": (1 - t/T)^power -> min_lr
    milestones: tuple[float, ...] = ()
    poly_power: float = 0.9
    min_lr: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    norm_weight_decay: bool = True  # False: no weight decay on BN weights and biases
    seeds: tuple[int, ...] = (0,)  # the reported number is the mean over seeds
    heldout: int = 0  # training images held out to choose the LR (0: no sweep)
    cat_max_ratio: float = 1.0  # < 1: re-draw crops where one class covers that share (mmseg)
    photometric: bool = False  # mmseg's PhotoMetricDistortion on training crops

    def lr(self, iteration: int, base_lr: float) -> float:
        """The LR of `iteration` (0-based) under the protocol's schedule (pretrain/schedule.py)."""
        total = self.iterations
        if self.schedule == "step":
            milestones = tuple(math.floor(m * total) for m in self.milestones)
            return step_decay(iteration, total, base_lr, milestones=milestones)
        if self.schedule == "poly":  # mmseg PolyLR
            return poly(iteration, total, base_lr, power=self.poly_power, min_lr=self.min_lr)
        raise ValueError(f"unknown LR schedule {self.schedule!r}; use step or poly")


def voc12aug_fcn() -> SegmentationProtocol:
    """`byol-paper-fcn/1`: BYOL v3, App. D.4 (after MoCo, He et al. 2020, App. A.3).

    FCN on a dilated ResNet (conv5 dilation 2, stride 1; two 3x3 256-channel convs with dilation 6,
    BN, ReLU; 1x1 classifier). Trained on VOC2012 train_aug (10,582 images), reported as mIoU on
    val2012 (1,449 images). Random rescale in [0.5, 2.0], crop 513, horizontal flip; batch 16;
    SGD momentum 0.9 (not stated in the paper: MoCo's and the common choice), weight decay 1e-4;
    30,000 iterations; LR among 5 log-spaced values in [1e-3, 1e-1], x0.1 at 70% and 90% of
    training, chosen on 2,119 images held out from train_aug; centre 513 crop at test (VOC
    images are at most 500 px, so the whole image); mean of 5 seeds.

    Not stated in the paper, our choices: the sweep trains with the first seed on train_aug minus
    the held-out images (a seeded draw, transfer/segmentation/data.py:hold_out_images); each seed
    then retrains on all of train_aug at the chosen LR. MoCo's SyncBN over the batch of 16 is
    plain BN over the same 16 images on one device (the built-in engine runs on one device).
    """
    return SegmentationProtocol(
        name=SEGMENTATION_PROTOCOL,  # "byol-paper-fcn/1", paired with the paper's 76.3 mIoU
        dataset="voc2012",
        train_split="train_aug",
        eval_split="val",
        head="fcn",
        iterations=30_000,
        batch_size=16,
        crop=513,
        test_crop=513,
        scale_range=(0.5, 2.0),
        base_size=None,
        lrs=tuple(10.0**e for e in (-3.0, -2.5, -2.0, -1.5, -1.0)),
        schedule="step",
        milestones=(0.7, 0.9),
        weight_decay=1e-4,
        seeds=(0, 1, 2, 3, 4),
        heldout=2_119,
    )


def ade20k_semfpn_80k() -> SegmentationProtocol:
    """`ade20k-semfpn-80k/1`: semantic FPN on ADE20K, as mmseg 0.x
    configs/sem_fpn/fpn_r50_512x512_80k_ade20k.py (Kirillov et al. 2019's head).

    ADEChallengeData2016, 150 classes (label 0 "other" ignored), train 20,210 -> val 2,000 mIoU.
    Keep-ratio base size (2048, 512) (mmseg _base_/datasets/ade20k.py), random rescale in
    [0.5, 2.0], crop 512 re-drawn up to 10 times while one class covers >= 75% of it
    (cat_max_ratio 0.75), flip, PhotoMetricDistortion; batch 16 (4 GPUs x 4); SGD lr 0.01,
    momentum 0.9, weight decay 5e-4, none on norm layers (norm_decay_mult=0); poly decay power
    0.9 to 1e-4
    (_base_/schedules/schedule_80k.py); 80,000 iterations; test: whole image at the base size,
    logits resized to the label. One seed (mmseg reports single runs).

    DEVIATION(hsv): the built-in engine's PhotoMetricDistortion converts to HSV with PIL (hue in
    256 steps) where mmseg uses OpenCV (180 steps): the same distortion up to rounding.
    """
    return SegmentationProtocol(
        name="ade20k-semfpn-80k/1",
        dataset="ade20k",
        train_split="train",
        eval_split="val",
        head="semfpn",
        iterations=80_000,
        batch_size=16,
        crop=512,
        test_crop=None,
        scale_range=(0.5, 2.0),
        base_size=(2048, 512),
        lrs=(0.01,),
        schedule="poly",
        poly_power=0.9,
        min_lr=1e-4,
        weight_decay=5e-4,
        norm_weight_decay=False,
        seeds=(0,),
        cat_max_ratio=0.75,
        photometric=True,
    )


PROTOCOLS: dict[str, Callable[[], SegmentationProtocol]] = {
    SEGMENTATION_PROTOCOL: voc12aug_fcn,
    "ade20k-semfpn-80k/1": ade20k_semfpn_80k,
}
