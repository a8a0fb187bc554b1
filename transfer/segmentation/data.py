"""Semantic-segmentation data: VOC2012 (+ SBD "aug") and ADE20K readers and joint transforms.

Readers return (uint8 image [3, H, W], int64 label [H, W]) with label values in
[0, num_classes) or IGNORE (255: VOC's object boundaries, ADE20K's "other", padding).

VOC2012 (`--data` = VOCdevkit/VOC2012, or VOCdevkit holding it):
    JPEGImages/<id>.jpg
    SegmentationClass/<id>.png            palette PNGs, indices 0..20 and 255 (train, val)
    SegmentationClassAug/<id>.png         SBD-augmented labels, grey PNGs (train_aug)
    ImageSets/Segmentation/{train,val}.txt
    ImageSets/Segmentation/train_aug.txt  10,582 ids (DeepLab's name; mmseg's aug.txt also works)
ADE20K (`--data` = ADEChallengeData2016): images/{training,validation}/*.jpg and
annotations/{training,validation}/*.png with 0 = "other" (ignored) and 1..150 the classes
(mmseg's reduce_zero_label: 150 classes, label - 1).

Training views (transfer/segmentation/augment.py) draw from pretrain.sampling.sample_seed(seed,
position, 0), where `position` counts samples since the start of training (the (position, index)
keys of pretrain/sampling.py's stream mode), so a resumed run sees the same crops as an
uninterrupted one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from pretrain.data import DataError
from pretrain.sampling import sample_seed
from transfer.detection.data import VOC_CLASSES as VOC_OBJECT_CLASSES
from transfer.segmentation.augment import (
    IGNORE,
    Augmentation,
    centre_crop,
    eval_view,
    train_view,
)

VOC_CLASSES = ("background", *VOC_OBJECT_CLASSES)  # label 0, then detection's 20 in order
ADE20K_NUM_CLASSES = 150
SEG_DATASETS = ("voc2012", "ade20k")
VOC_AUG_LISTS = ("train_aug.txt", "aug.txt")  # DeepLab's name, mmseg's name


@dataclass(frozen=True)
class SegmentationSet:
    """Image/label file pairs of one split; `reduce_zero_label` is ADE20K's label - 1 rule."""

    name: str  # "voc2012" or "ade20k"
    split: str
    ids: tuple[str, ...]
    images: tuple[Path, ...]
    labels: tuple[Path, ...]
    num_classes: int
    reduce_zero_label: bool = False

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, keep: list[int], split: str) -> SegmentationSet:
        """The pairs at indices `keep`, named `split`."""
        pick = [tuple(items[i] for i in keep) for items in (self.ids, self.images, self.labels)]
        return SegmentationSet(self.name, split, *pick, self.num_classes, self.reduce_zero_label)

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 image [3, H, W], int64 label [H, W]) of pair `index`."""
        with Image.open(self.images[index]) as image:
            rgb = np.asarray(image.convert("RGB"))
        with Image.open(self.labels[index]) as label_file:
            # Palette PNGs (VOC) hold class indices; never convert them to RGB.
            label = np.asarray(
                label_file if label_file.mode in ("P", "L") else label_file.convert("L")
            )
        if label.shape != rgb.shape[:2]:
            raise DataError(_size_message(self.labels[index], label.shape, rgb.shape[:2]))
        label = torch.from_numpy(label.astype(np.int64))
        if self.reduce_zero_label:
            label = torch.where((label == 0) | (label == IGNORE), IGNORE, label - 1)
        return torch.from_numpy(rgb.copy()).permute(2, 0, 1), label

    def fingerprint(self) -> str:
        """SHA-256 of the id list: which images a result was measured on."""
        return hashlib.sha256("\n".join(self.ids).encode()).hexdigest()


def _size_message(label: Path, label_shape, image_shape) -> str:
    return (
        f"label {label} is {label_shape[1]}x{label_shape[0]} px but its image is "
        f"{image_shape[1]}x{image_shape[0]} px; labels must have their image's size (re-extract "
        "the data set or remove the pair from the split list)"
    )


def check_sizes(images: SegmentationSet) -> None:
    """Refuse a split where any label PNG's size differs from its image's (headers only)."""
    for image_path, label_path in tqdm(
        zip(images.images, images.labels), total=len(images), desc=f"check {images.split}"
    ):
        with Image.open(image_path) as image, Image.open(label_path) as label:
            if image.size != label.size:
                raise DataError(_size_message(label_path, label.size[::-1], image.size[::-1]))


def build_segmentation_set(name: str, root: str | None, split: str) -> SegmentationSet:
    """The `split` of data set `name` under `root` (see the module docstring for layouts)."""
    if name not in SEG_DATASETS:
        raise DataError(f"unknown segmentation data set {name!r}; use one of {SEG_DATASETS}")
    if root is None or not Path(root).is_dir():
        raise DataError(f"--data {root} is not a directory; pass the root of the {name} data set")
    pairs = _voc_pairs(Path(root), split) if name == "voc2012" else _ade_pairs(Path(root), split)
    ids, images, labels = (tuple(items) for items in zip(*pairs)) if pairs else ((), (), ())
    missing = [str(path) for path in images + labels if not path.is_file()]
    if missing:
        raise DataError(
            f"{len(missing)} files of {name}/{split} are missing, e.g. {missing[:3]}; check --data"
        )
    if not ids:
        raise DataError(f"{name}/{split} under {root} lists no images")
    num_classes = len(VOC_CLASSES) if name == "voc2012" else ADE20K_NUM_CLASSES
    return SegmentationSet(name, split, ids, images, labels, num_classes, name == "ade20k")


def _voc_pairs(root: Path, split: str) -> list[tuple[str, Path, Path]]:
    if not (root / "JPEGImages").is_dir() and (root / "VOC2012" / "JPEGImages").is_dir():
        root = root / "VOC2012"  # VOCdevkit given
    lists = root / "ImageSets" / "Segmentation"
    if not lists.is_dir():
        raise DataError(
            f"{root} has no ImageSets/Segmentation; --data must be VOCdevkit/VOC2012 with "
            "JPEGImages/, SegmentationClass/, SegmentationClassAug/ and ImageSets/Segmentation/"
        )
    if split == "train_aug":
        found = [lists / name for name in VOC_AUG_LISTS if (lists / name).is_file()]
        if not found:
            raise DataError(
                f"{lists} has no train_aug.txt (or mmseg's aug.txt): the 10,582 ids of VOC2012 "
                "train + SBD minus VOC2012 val, with labels in SegmentationClassAug/"
            )
        list_file, label_dir = found[0], root / "SegmentationClassAug"
    elif split in ("train", "val", "trainval"):
        list_file, label_dir = lists / f"{split}.txt", root / "SegmentationClass"
        if not list_file.is_file():
            raise DataError(f"{list_file} does not exist; VOC2012's split lists are missing")
    else:
        raise DataError(f"unknown VOC2012 split {split!r}; use train_aug, train, val or trainval")
    ids = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
    return [(i, root / "JPEGImages" / f"{i}.jpg", label_dir / f"{i}.png") for i in ids]


def _ade_pairs(root: Path, split: str) -> list[tuple[str, Path, Path]]:
    folder = {"train": "training", "val": "validation"}.get(split)
    if folder is None:
        raise DataError(f"unknown ADE20K split {split!r}; use train or val")
    if (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    image_dir, label_dir = root / "images" / folder, root / "annotations" / folder
    if not image_dir.is_dir() or not label_dir.is_dir():
        raise DataError(
            f"{root} has no images/{folder} and annotations/{folder}; --data must be "
            "ADEChallengeData2016 (the SceneParsing release)"
        )
    stems = sorted(path.stem for path in image_dir.glob("*.jpg"))
    return [(s, image_dir / f"{s}.jpg", label_dir / f"{s}.png") for s in stems]


def hold_out_images(
    images: SegmentationSet, count: int, seed: int = 0
) -> tuple[SegmentationSet, SegmentationSet]:
    """(train minus held-out, held-out of `count` images): a seeded draw by hashed id.

    Segmentation's LR sweep set (evaluate/splits.py:heldout_split is the classification one)."""
    if not 0 < count < len(images):
        raise DataError(f"cannot hold out {count} of {len(images)} {images.split} images")
    key = [hashlib.sha256(f"{seed}:{i}".encode()).hexdigest() for i in images.ids]
    order = sorted(range(len(images)), key=key.__getitem__)
    heldout, train = sorted(order[:count]), sorted(order[count:])
    name = f"heldout-{count}"
    return images.subset(train, f"{images.split}-minus-{name}"), images.subset(heldout, name)


class TrainPairs(Dataset):
    """Training views keyed by (position, index) from pretrain/sampling.py's stream mode."""

    def __init__(self, images: SegmentationSet, aug: Augmentation, seed: int) -> None:
        self.images, self.aug, self.seed = images, aug, seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]):
        position, index = key
        image, label = self.images.load(index)
        return train_view(image, label, self.aug, sample_seed(self.seed, position, 0))


class EvalPairs(Dataset):
    """(test input, label at the original size) per image; batch size 1 (sizes differ)."""

    def __init__(self, images: SegmentationSet, aug: Augmentation, test_crop: int | None) -> None:
        self.images, self.aug, self.test_crop = images, aug, test_crop

    def __len__(self) -> int:
        return len(self.images)

    def original(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 image [3, h, w], label [h, w]) of pair `index` as scored: centre-cropped when
        the protocol crops, before the test input's rescaling and normalisation."""
        image, label = self.images.load(index)
        if self.test_crop is not None:
            image, label = centre_crop(image, label, self.test_crop)
        return image, label

    def __getitem__(self, index: int):
        image, label = self.original(index)
        return eval_view(image, self.aug), label
