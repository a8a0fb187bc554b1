"""Named, versioned frozen dense-probe protocols: every setting of a run, stated with its source.

Each is its own `task.protocol` (results/tables.py never puts two protocols in one column), so a
frozen probe never shares a column with a fine-tune (byol-paper-fcn/1). They take any backbone
(`backbone = "any"`): a ResNet's conv5 map (OUR adaptation of DINOv2's linear ViT probes, Oquab
et al. 2023, §7; the issue-17 facts sheet "depth-nyu", §7) or a ViT's last-block patch grid as
DINOv2 reads it (maps.py). Either way the cached fixed view (features.py) differs from DINOv2's
random-crop training: not a published protocol, and no published number pairs with them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from transfer.dense_probe.train import ProbeSchedule, nyu_depth_schedule

SAMPLES_SEEN = 40_000 * 16  # DINOv2 linear seg: 40k iterations x batch 16 (2/GPU x 8)
LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)  # ours: half-decades around DINOv2's single LR, 1e-3


@dataclass(frozen=True)
class ProbeProtocol:
    """Every setting of one frozen dense-probe protocol (see the preset functions for sources).

    Field names follow transfer/segmentation/protocols.py where they mean the same (dataset,
    splits, crop, lrs, seeds, heldout), so the segmentation CLI loads its data unchanged.
    """

    name: str  # task.protocol, "<name>/<version>"
    dataset: str  # "voc2012" | "ade20k"
    train_split: str
    eval_split: str  # reported split
    crop: int  # the fixed view: shorter side resized to `crop`, centre crop crop x crop
    schedule: ProbeSchedule
    lrs: tuple[float, ...] = LRS  # more than one: chosen on `heldout` training images
    heldout: int = 0
    seeds: tuple[int, ...] = (0,)  # one seed: head init and batch order
    head: str = "frozen-linear"  # BN + 1x1 conv on the map (transfer/dense_probe/heads.py)
    backbone: str = "any"  # a ResNet's conv5 map or a ViT's patch grid (maps.py)
    # what a ViT gives the head (maps.py): DINOv2's linear seg input, the normed patch tokens
    vit_tokens: str = "normed-patches"


def voc12aug_frozen_linear() -> ProbeProtocol:
    """`frozen-linear-seg/1`: BN + 1x1 conv on the frozen conv5 map (a ViT: its normed last-block
    patch tokens, maps.py), VOC2012 train_aug -> val.

    View: shorter side 512, centre crop 512 (DINOv2's 512 px crop), features cached once
    (transfer/dense_probe/features.py); scored on the view's pixels. Differs from DINOv2, which
    trains on random crops and tests with a sliding window over the whole image; cached
    features allow neither. 60 epochs of 10,582 images ~ DINOv2's 640,000 samples; LR among
    LRS chosen on the 2,119 held-out images of byol-paper-fcn/1 (BYOL v3, App. D.4), then
    retrained on all of train_aug.
    """
    return ProbeProtocol(
        name="frozen-linear-seg/1",
        dataset="voc2012",
        train_split="train_aug",
        eval_split="val",
        crop=512,  # DINOv2 linear seg crop_size (512, 512)
        schedule=ProbeSchedule(epochs=60),  # ~ SAMPLES_SEEN / 10,582
        heldout=2_119,  # as byol-paper-fcn/1
    )


def ade20k_frozen_linear() -> ProbeProtocol:
    """`frozen-linear-seg-ade20k/1`: as frozen-linear-seg/1 on ADE20K train -> val (150
    classes, "other" ignored). 32 epochs of 20,210 images ~ DINOv2's 640,000 samples; LR chosen
    on 2,000 held-out training images (ours: the size of val)."""
    return replace(
        voc12aug_frozen_linear(),
        name="frozen-linear-seg-ade20k/1",
        dataset="ade20k",
        train_split="train",
        eval_split="val",
        schedule=ProbeSchedule(epochs=32),  # ~ SAMPLES_SEEN / 20,210
        heldout=2_000,
    )


# ours: half-decades around DINOv2's NYU linear-depth LR, 5e-3
DEPTH_LRS = (5e-4, 1.5e-3, 5e-3, 1.5e-2, 5e-2)
NYU_FRAMES = 24_231  # cleinc/bts nyudepthv2_train_files_with_gt.txt: the frames' list


def nyu_frozen_linear_depth() -> ProbeProtocol:
    """`frozen-linear-depth/1`: DINOv2's linear depth probe ("lin. 1": x4 bilinear upsampling,
    a 1x1 conv to 256 bins over [0.001, 10] m, linear normalisation) on the frozen conv5 map (a
    ViT: DINOv2's own input, its last block's patch tokens each with the [CLS] token, maps.py) of
    whole 480x640 NYU frames (DINOv2 tests on the whole image; the cached view cannot train on
    its random 416x544 crops), trained with SigLoss + 0.5 GradientLoss (transfer/depth/loss.py)
    on frames from the raw sequences and scored on the 654 labelled test images (delta, rms, rel
    over every measured pixel). AdamW, wd 0.01, warm-up then cosine over the samples of DINOv2's
    38,400 x 16 iterations as epochs (train.py:nyu_depth_schedule); LR among DEPTH_LRS chosen on
    10% of the training images held out, lowest rms. SigLoss's warm-up (its first 100 calls) is
    not used: the loop's loss does not know its step. Not a published protocol (for ResNets,
    which have no [CLS] token to concatenate, OUR adaptation)."""
    return ProbeProtocol(
        name="frozen-linear-depth/1",
        dataset="nyu-v2",
        train_split="frames",
        eval_split="test",
        crop=480,  # shorter side of the whole-image view: NYU's 480x640 as it is
        schedule=nyu_depth_schedule(NYU_FRAMES),
        lrs=DEPTH_LRS,
        heldout=NYU_FRAMES // 10,
        head="frozen-linear-depth",
        vit_tokens="patches+cls",  # DINOv2 hub/depthers.py "lin. 1": [patch, CLS], no final norm
    )


def nyu_labelled_frozen_linear_depth() -> ProbeProtocol:
    """`frozen-linear-depth-labelled795/1`: frozen-linear-depth/1 trained on the 795 labelled
    training images (DEVIATION(depth-labelled-795)); 80 of them held out to choose the LR."""
    return replace(
        nyu_frozen_linear_depth(),
        name="frozen-linear-depth-labelled795/1",
        train_split="labelled-train",
        schedule=nyu_depth_schedule(795),
        heldout=80,
    )


PROBE_PROTOCOLS: dict[str, Callable[[], ProbeProtocol]] = {
    "frozen-linear-seg/1": voc12aug_frozen_linear,
    "frozen-linear-seg-ade20k/1": ade20k_frozen_linear,
}
DEPTH_PROBE_PROTOCOLS: dict[str, Callable[[], ProbeProtocol]] = {
    "frozen-linear-depth/1": nyu_frozen_linear_depth,
    "frozen-linear-depth-labelled795/1": nyu_labelled_frozen_linear_depth,
}


def narrowed(
    settings: ProbeProtocol,
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    crop: int | None = None,
    lrs: tuple[float, ...] | None = None,
    seeds: tuple[int, ...] | None = None,
    heldout: int | None = None,
) -> ProbeProtocol:
    """The preset with the shortening flags applied (None: the preset's value)."""
    schedule = settings.schedule
    schedule = replace(
        schedule,
        epochs=schedule.epochs if epochs is None else epochs,
        batch_size=schedule.batch_size if batch_size is None else batch_size,
    )
    given = {"crop": crop, "lrs": lrs, "seeds": seeds, "heldout": heldout}
    return replace(settings, schedule=schedule, **{k: v for k, v in given.items() if v is not None})
