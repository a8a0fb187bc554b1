"""Tiny VOC2012 and ADE20K trees on disk in the real layouts, and a random-weight export.

Images show coloured rectangles on a grey background; the label is the rectangle's class (palette
PNGs for SegmentationClass, grey PNGs for SegmentationClassAug and ADE20K), with a 255 boundary
ring in VOC, as in the real data.
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pretrain.backbones import build_backbone
from pretrain.checkpoint import export_backbone


def _voc_palette() -> list[int]:
    """VOC's colour map (bit-interleaved), 256 entries."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


def _sample(rng: np.random.Generator, size: tuple[int, int], num_classes: int, boundary: bool):
    height, width = size
    image = np.full((height, width, 3), 128, np.uint8)
    label = np.zeros((height, width), np.uint8)
    for _ in range(2):
        cls = int(rng.integers(1, num_classes))
        top, left = int(rng.integers(0, height // 2)), int(rng.integers(0, width // 2))
        bottom, right = top + height // 3, left + width // 3
        colour = np.array([(cls * 53) % 256, (cls * 97) % 256, (cls * 151) % 256], np.uint8)
        image[top:bottom, left:right] = colour
        label[top:bottom, left:right] = cls
        if boundary:
            label[top, left:right] = 255
    return image, label


def make_voc(root: Path, train: int = 6, val: int = 3, seed: int = 0) -> Path:
    """VOCdevkit/VOC2012 with train, val and train_aug lists; returns the VOC2012 directory."""
    rng = np.random.default_rng(seed)
    voc = root / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "SegmentationClassAug"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True, exist_ok=True)
    ids = {"train": [], "val": []}
    for n in range(train + val):
        split = "train" if n < train else "val"
        image_id = f"2007_{n:06d}"
        size = (int(rng.integers(48, 80)), int(rng.integers(48, 80)))
        image, label = _sample(rng, size, 21, boundary=True)
        Image.fromarray(image).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=95)
        palette = Image.fromarray(label, mode="P")
        palette.putpalette(_voc_palette())
        palette.save(voc / "SegmentationClass" / f"{image_id}.png")
        Image.fromarray(label, mode="L").save(voc / "SegmentationClassAug" / f"{image_id}.png")
        ids[split].append(image_id)
    (lists / "train.txt").write_text("\n".join(ids["train"]) + "\n")
    (lists / "val.txt").write_text("\n".join(ids["val"]) + "\n")
    (lists / "train_aug.txt").write_text("\n".join(ids["train"]) + "\n")
    return voc


def make_ade20k(root: Path, train: int = 4, val: int = 2, seed: int = 0) -> Path:
    """ADEChallengeData2016 with images/ and annotations/ (0 = other, 1..150)."""
    rng = np.random.default_rng(seed)
    ade = root / "ADEChallengeData2016"
    for split, folder, count in (("train", "training", train), ("val", "validation", val)):
        (ade / "images" / folder).mkdir(parents=True, exist_ok=True)
        (ade / "annotations" / folder).mkdir(parents=True, exist_ok=True)
        for n in range(count):
            stem = f"ADE_{split}_{n:08d}"
            image, label = _sample(rng, (64, 96), 151, boundary=False)
            Image.fromarray(image).save(ade / "images" / folder / f"{stem}.jpg", quality=95)
            Image.fromarray(label, mode="L").save(ade / "annotations" / folder / f"{stem}.png")
    return ade


def make_export(root: Path, arch: str = "resnet18", seed: int = 0) -> Path:
    """exports/backbone-<sha8>.pt of a seeded random `arch`, as pretrain/train.py writes it."""
    torch.manual_seed(seed)
    model, feature_dim = build_backbone(arch)
    metadata = {
        "label": f"test-{arch}",
        "arch": arch,
        "cifar_stem": False,
        "feature_dim": feature_dim,
        "method": "byol",
        "source": "byol-bench",
        "pretrain_epochs": 1,
        "preprocessing": None,
    }
    return export_backbone(root / "run", model.state_dict(), metadata)


def make_vit_export(root: Path, cls_token: bool = True, final_norm: bool = True, seed: int = 0):
    """exports/backbone-<sha8>.pt of a seeded random vit_tiny12_test (patch 4, 32-d, 12 blocks):
    DINO's ViT by default, SelfPatch's with cls_token and final_norm False."""
    torch.manual_seed(seed)
    model, feature_dim = build_backbone(
        "vit_tiny12_test", cls_token=cls_token, final_norm=final_norm
    )
    metadata = {
        "label": "test-vit",
        "arch": "vit_tiny12_test",
        "patch_size": 4,
        "cls_token": cls_token,
        "final_norm": final_norm,
        "feature_dim": feature_dim,
        "method": "dino" if cls_token else "selfpatch",
        "source": "byol-bench",
        "pretrain_epochs": 1,
        "preprocessing": None,
    }
    return export_backbone(root / "run", model.state_dict(), metadata)
