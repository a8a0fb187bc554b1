"""The 12 transfer data sets of BYOL v3 Table 3, read from their creators' releases as shipped.

`read_release(name, root)` returns a `Release`: the creators' train split, their validation
split where the protocol uses it (Aircraft, VOC2007, DTD, Flowers: BYOL v3, App. D.1; SimCLR
B.8.1), else None (the protocol then holds part of train out), and the split results are
reported on. Every split is an ImageDataset reading its files lazily, named after the data set,
with the same `classes` (same order) in train, val and test. Each reader's docstring names its
files and their format, as the creators ship them and as torchvision's loaders of the same
releases read them (torchvision/datasets/{food101,stanford_cars,...}.py, checked).

`root` is the release folder itself or the folder holding it under its usual name
(FOLDER_NAMES), so `--data DIR` works both ways, and with `--dataset all` one DIR holds the 12
side by side. The usual names are what the creators' archives extract to, or torchvision's
folder where the creators ship loose archives:

- food101 `food-101` (food-101.tar.gz); cifar10 `cifar-10-batches-py`, cifar100
  `cifar-100-python` (the python tarballs); birdsnap `birdsnap` (birdsnap.tgz); sun397 `SUN397`
  (SUN397.tar.gz); aircraft `fgvc-aircraft-2013b`; voc2007 `VOCdevkit` (both VOC2007 tars;
  VOCdevkit/VOC2007 itself is accepted too); dtd `dtd` (dtd-r1.0.1.tar.gz);
  caltech101 `101_ObjectCategories` (101_ObjectCategories.tar.gz; also found inside
  `caltech101/` or `caltech-101/`, torchvision's and the current caltech-101.zip's folders);
- torchvision's folders for loose archives: cars `stanford_cars` (cars_train.tgz, cars_test.tgz,
  car_devkit.tgz, cars_test_annos_withlabels.mat), pets `oxford-iiit-pet` (images.tar.gz,
  annotations.tar.gz), flowers `flowers-102` (102flowers.tgz, imagelabels.mat, setid.mat).

Class counts are checked for internal consistency only (a split using a class its class list
lacks is a DataError), never against the paper's counts (PAPER_CLASSES), so miniature copies of
a release read the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pretrain.data import IMAGE_EXTENSIONS, CifarDataset, DataError, ImageDataset
from results.published import TRANSFER_METRICS
from transfer.classification.release_files import (
    RELEASE_CONTENTS,
    ImageListDataset,
    Splits,
    check_classes,
    require,
)
from transfer.classification.releases_lists import (
    read_aircraft,
    read_birdsnap,
    read_dtd,
    read_food101,
    read_pets,
    read_sun397,
    read_voc2007,
)
from transfer.classification.releases_matlab import read_cars, read_flowers

TRANSFER_DATASETS = (  # BYOL v3, Table 3's column order
    "food101",
    "cifar10",
    "cifar100",
    "birdsnap",
    "sun397",
    "cars",
    "aircraft",
    "voc2007",
    "dtd",
    "pets",
    "caltech101",
    "flowers",
)
FOLDER_NAMES = {  # the usual folder of each release under one `--dataset all` DIR (see above)
    "food101": "food-101",
    "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python",
    "birdsnap": "birdsnap",
    "sun397": "SUN397",
    "cars": "stanford_cars",
    "aircraft": "fgvc-aircraft-2013b",
    "voc2007": "VOCdevkit",
    "dtd": "dtd",
    "pets": "oxford-iiit-pet",
    "caltech101": "101_ObjectCategories",
    "flowers": "flowers-102",
}
PAPER_CLASSES = {  # BYOL v3, Table 10; Caltech-101: 3,060 = 102 x 30, BACKGROUND_Google counted
    "food101": 101,
    "cifar10": 10,
    "cifar100": 100,
    "birdsnap": 500,
    "sun397": 397,
    "cars": 196,
    "aircraft": 100,
    "voc2007": 20,
    "dtd": 47,
    "pets": 37,
    "caltech101": 102,
    "flowers": 102,
}
METRIC = TRANSFER_METRICS  # BYOL v3, App. D.1 (the one list: results/published.py)
CALTECH_TRAIN_PER_CLASS = 30  # SimCLR B.8.1: "randomly chose 30 images per class", rest is test
_MARKERS = {  # a file or folder that only the release folder itself holds
    "food101": "meta",
    "birdsnap": "species.txt",
    "sun397": "ClassName.txt",
    "cars": "devkit",
    "aircraft": "data",
    "voc2007": "VOC2007",
    "dtd": "labels",
    "pets": "annotations",
    "flowers": "imagelabels.mat",
}


@dataclass(frozen=True)
class Release:
    """One data set's splits as its creators define them (see the module docstring)."""

    name: str
    train: ImageDataset  # the creators' training split (Aircraft, DTD, Flowers, VOC: `train`)
    val: ImageDataset | None  # the creators' validation split where the protocol uses it
    test: ImageDataset  # the split results are reported on
    metric: str  # METRIC[name]
    root: Path  # the release folder that was read
    notes: tuple[str, ...] = ()  # what differs from the full release (Birdsnap: images missing)


def read_release(name: str, root: str | Path, *, seed: int = 0) -> Release:
    """The release `name` under `root` (its folder or the folder holding it); `seed` draws
    Caltech-101's 30 training images per class (the only split that is not the creators')."""
    if name not in TRANSFER_DATASETS:
        raise DataError(f"unknown transfer data set {name!r}; choose one of {TRANSFER_DATASETS}")
    folder = release_folder(name, root)
    train, val, test, notes = _READERS[name](folder, seed)
    for split in (val, test):
        if split is not None and split.classes != train.classes:
            raise DataError(f"{name} splits under {folder} disagree on the class list")
    for split_name, split in (("train", train), ("val", val), ("test", test)):
        if split is not None and len(split) == 0:
            raise DataError(f"the {name} {split_name} split under {folder} lists no images")
    return Release(name, train, val, test, METRIC[name], folder, tuple(notes))


def release_folder(name: str, root: str | Path) -> Path:
    """The release folder of `name`: `root` itself, or `root`/FOLDER_NAMES[name] (and the few
    other names in the module docstring) when that exists. Absolute, not resolved, so both ways
    of naming a release give the same image paths."""
    root = Path(os.path.abspath(root))
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist; {RELEASE_CONTENTS[name]}")
    marker = _MARKERS.get(name)
    candidates = [root / FOLDER_NAMES[name]]
    if name == "caltech101":
        candidates += [root / "caltech101" / FOLDER_NAMES[name]]
        candidates += [root / "caltech-101" / FOLDER_NAMES[name]]
    for candidate in candidates:
        if candidate.is_dir() and (marker is None or (candidate / marker).exists()):
            return candidate
    if marker is not None and (root / marker).exists():
        return root
    if name == "voc2007" and root.name == "VOC2007" and (root / "ImageSets").is_dir():
        return root.parent
    # an incomplete release: its folder if there is one, so that errors name files inside it
    return next((candidate for candidate in candidates if candidate.is_dir()), root)


def read_cifar(folder: Path, seed: int, num_classes: int) -> Splits:
    """CIFAR-10/100 (Krizhevsky 2009) through pretrain.data.CifarDataset: the python batches
    (CIFAR-100: the fine labels); train 50,000, test 10,000 [3, 32, 32] images."""
    train, test = (CifarDataset(folder, split, num_classes) for split in ("train", "test"))
    for split_name, split in (("train", train), ("test", test)):
        where = f"the CIFAR-{num_classes} {split_name} batches in {folder}"
        check_classes(split.targets, split.num_classes, where, "the meta file")
    return Splits(train, None, test)


def read_caltech101(folder: Path, seed: int) -> Splits:
    """Caltech-101 (Fei-Fei et al. 2004): 101_ObjectCategories/<category>/image_<n>.jpg, all
    folders including BACKGROUND_Google (102 classes: BYOL v3 Table 10's 3,060 = 102 x 30).
    There is no official split: as SimCLR B.8.1 (and VISSL's script), 30 images per class are
    drawn for train and the rest is test. The draw: classes in sorted folder order (case
    sensitive), files in sorted name order, one numpy.random.default_rng(seed) drawing
    rng.choice(n, 30, replace=False) per class in turn. A class with 30 or fewer images leaves
    nothing to test on: a DataError."""
    require(folder, "caltech101")
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and d.name[0] != ".")
    if not classes:
        raise DataError(f"{folder} has no category folders; {RELEASE_CONTENTS['caltech101']}")
    rng = np.random.default_rng(seed)
    train_paths, train_targets, test_paths, test_targets = [], [], [], []
    for label, class_name in enumerate(classes):
        files = sorted(
            folder / class_name / file
            for file in os.listdir(folder / class_name)
            if file.lower().endswith(IMAGE_EXTENSIONS)
        )
        if len(files) <= CALTECH_TRAIN_PER_CLASS:
            raise DataError(
                f"{folder / class_name} has {len(files)} images but the Caltech-101 protocol "
                f"draws {CALTECH_TRAIN_PER_CLASS} per class for training and tests on the rest; "
                f"{RELEASE_CONTENTS['caltech101']}"
            )
        chosen = set(rng.choice(len(files), CALTECH_TRAIN_PER_CLASS, replace=False).tolist())
        for index, path in enumerate(files):
            paths, targets = (
                (train_paths, train_targets) if index in chosen else (test_paths, test_targets)
            )
            paths.append(path)
            targets.append(label)
    train = ImageListDataset("caltech101", classes, train_paths, train_targets)
    test = ImageListDataset("caltech101", classes, test_paths, test_targets)
    note = f"Caltech-101 has no official split: train is 30 images per class drawn with seed {seed}"
    return Splits(train, None, test, (note,))


_READERS: dict[str, Callable[[Path, int], Splits]] = {
    "food101": read_food101,
    "cifar10": lambda folder, seed: read_cifar(folder, seed, 10),
    "cifar100": lambda folder, seed: read_cifar(folder, seed, 100),
    "birdsnap": read_birdsnap,
    "sun397": read_sun397,
    "cars": read_cars,
    "aircraft": read_aircraft,
    "voc2007": read_voc2007,
    "dtd": read_dtd,
    "pets": read_pets,
    "caltech101": read_caltech101,
    "flowers": read_flowers,
}
