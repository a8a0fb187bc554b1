"""The files of a transfer release: lists, .mat files and images, and what a missing one means.

Used by the readers in releases.py and releases_matlab.py. Every error is a one-sentence
`DataError` that names the file and what the release should contain (RELEASE_CONTENTS).

Images are read lazily: an `ImageListDataset` holds paths and labels and decodes one image per
`load(index)` with PIL, converted to RGB (uint8 [3, H, W]), like pretrain.data.ImageFolderDataset;
a damaged file is a DataError naming it. `VocDataset` adds VOC2007's multi-label matrix.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.io
import torch

from pretrain.data import DataError, ImageDataset, decode_rgb

RELEASE_CONTENTS = {  # what each creators' release holds, for the error messages
    "food101": "the Food-101 release (food-101.tar.gz) has meta/{classes,train,test}.txt and "
    "images/<class>/<id>.jpg",
    "cifar10": "the CIFAR-10 release (cifar-10-python.tar.gz) has data_batch_1..5, test_batch "
    "and batches.meta",
    "cifar100": "the CIFAR-100 release (cifar-100-python.tar.gz) has train, test and meta",
    "birdsnap": "the Birdsnap release (birdsnap.tgz, v1.1) has species.txt, images.txt and "
    "test_images.txt, and its get_birdsnap.py saves the images as download/images/<dir>/<n>.jpg",
    "sun397": "the SUN397 release has ClassName.txt and <letter>/<class>/sun_*.jpg "
    "(SUN397.tar.gz) and the split-1 lists Training_01.txt and Testing_01.txt (Partitions.zip) "
    "in SUN397/ or in a Partitions/ folder inside or beside it",
    "cars": "the Stanford Cars release has devkit/cars_meta.mat and devkit/cars_train_annos.mat "
    "(car_devkit.tgz), cars_train/ and cars_test/ (cars_train.tgz, cars_test.tgz) and "
    "cars_test_annos_withlabels.mat in the release folder or in devkit/",
    "aircraft": "the FGVC-Aircraft release (fgvc-aircraft-2013b.tar.gz) has data/variants.txt, "
    "data/images_variant_{train,val,test}.txt and data/images/<id>.jpg",
    "voc2007": "the VOC2007 release (VOCtrainval_06-Nov-2007.tar and VOCtest_06-Nov-2007.tar, "
    "both extracted into one VOCdevkit) has VOC2007/ImageSets/Main/<class>_{train,val,test}.txt "
    "and VOC2007/JPEGImages/<id>.jpg",
    "dtd": "the DTD release (dtd-r1.0.1.tar.gz) has labels/{train,val,test}1.txt and "
    "images/<class>/<file>.jpg",
    "pets": "the Oxford-IIIT Pets release (images.tar.gz, annotations.tar.gz) has "
    "annotations/{trainval,test}.txt and images/<Breed>_<n>.jpg",
    "caltech101": "the Caltech-101 release (101_ObjectCategories.tar.gz) has one folder of "
    "images per category, BACKGROUND_Google included",
    "flowers": "the Oxford 102 Flowers release has imagelabels.mat, setid.mat and "
    "jpg/image_<5-digit id>.jpg (102flowers.tgz)",
}


class Splits(NamedTuple):
    """What a reader returns: the three splits (val None where the protocol holds one out of
    train) and notes on the release as found on disk (e.g. Birdsnap's images not downloaded)."""

    train: ImageDataset
    val: ImageDataset | None
    test: ImageDataset
    notes: tuple[str, ...] = ()


def missing(path: Path, release: str) -> DataError:
    """The error for a file or folder of `release` that is not there."""
    return DataError(f"{path} is missing; {RELEASE_CONTENTS[release]}")


def require(path: Path, release: str) -> Path:
    """`path` if it exists, else the DataError naming it and what the release holds."""
    if not path.exists():
        raise missing(path, release)
    return path


def read_raw_lines(path: Path, release: str) -> list[str]:
    """The lines of a text file as they are (a missing or unreadable file: a DataError)."""
    require(path, release)
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read {path} ({error}); extract the release again") from error


def read_lines(path: Path, release: str) -> list[str]:
    """The non-empty lines of a text file, stripped of surrounding white space."""
    return [line.strip() for line in read_raw_lines(path, release) if line.strip()]


def load_mat(path: Path, release: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """The variables `keys` of a MATLAB file, read by scipy.io.loadmat with squeeze_me=True
    (a [1, N] array becomes [N]; a struct array becomes a numpy record array)."""
    require(path, release)
    try:
        content = scipy.io.loadmat(path, squeeze_me=True)
    except (OSError, ValueError, TypeError) as error:
        raise DataError(f"cannot read {path} ({error}); {RELEASE_CONTENTS[release]}") from error
    absent = [key for key in keys if key not in content]
    if absent:
        raise DataError(
            f"{path} has no variable {absent[0]!r} (it has {sorted(content)}); "
            f"{RELEASE_CONTENTS[release]}"
        )
    return {key: content[key] for key in keys}


def present(paths: Sequence[Path]) -> list[bool]:
    """Whether each file exists, listing each folder once (fast on network file systems)."""
    listings: dict[Path, set[str]] = defaultdict(set)
    for folder in {path.parent for path in paths}:
        try:
            listings[folder] = set(os.listdir(folder))
        except OSError:  # a missing folder: none of its files is there
            listings[folder] = set()
    return [path.name in listings[path.parent] for path in paths]


def check_listed(paths: Sequence[Path], listed_in: Path, release: str) -> None:
    """A DataError naming the first image that `listed_in` lists but the disk lacks."""
    found = present(paths)
    if not all(found):
        first = paths[found.index(False)]
        raise DataError(
            f"{first} is listed in {listed_in} but absent ({found.count(False)} of {len(paths)} "
            f"listed images are missing); {RELEASE_CONTENTS[release]}"
        )


def check_classes(labels: Sequence[int], num_classes: int, where: str, class_list: str) -> None:
    """A DataError when a label (0-based) is outside the `num_classes` of the class list."""
    bad = [label for label in labels if not 0 <= label < num_classes]
    if bad:
        raise DataError(
            f"{where} uses class {bad[0] + 1} (1-based) but {class_list} declares "
            f"{num_classes} classes; the release is inconsistent, extract it again"
        )


class ImageListDataset(ImageDataset):
    """Listed image files and their labels (0-based indices into `classes`), decoded lazily."""

    def __init__(
        self, name: str, classes: Sequence[str], paths: Sequence[Path], targets: Sequence[int]
    ) -> None:
        if len(paths) != len(targets):
            raise DataError(f"{name}: {len(paths)} image paths but {len(targets)} labels")
        self.paths = [Path(path) for path in paths]
        super().__init__(name, classes, targets)

    def load(self, index: int) -> tuple[torch.Tensor, int]:
        return decode_rgb(self.paths[index]), self.targets[index]


class VocDataset(ImageListDataset):
    """VOC2007 classification: images with one label per class, as the devkit writes them.

    `label_matrix` is torch.int8 [N, C]: 1 (the class is present), -1 (absent), 0 (present but
    only as difficult objects), straight from ImageSets/Main/<class>_<split>.txt. `targets` is
    one int per image because the feature cache and the samplers need one: the first class that
    is 1 for the image, or, for an image whose objects are all difficult, the first class that
    is 0. The VOC protocol (11-point mAP) uses `label_matrix`, never `targets`.
    """

    def __init__(
        self, name: str, classes: Sequence[str], paths: Sequence[Path], label_matrix: torch.Tensor
    ) -> None:
        self.label_matrix = label_matrix.to(torch.int8)  # [N, C]
        positive, difficult = self.label_matrix == 1, self.label_matrix == 0
        first = torch.where(
            positive.any(dim=1), positive.int().argmax(dim=1), difficult.int().argmax(dim=1)
        )
        super().__init__(name, classes, paths, first.tolist())
