"""Readers of the releases whose labels are MATLAB files: Stanford Cars and Oxford 102 Flowers.

The .mat files are read with scipy.io.loadmat(squeeze_me=True), the structures checked against
torchvision's StanfordCars and Flowers102 loaders (torchvision/datasets/stanford_cars.py,
flowers102.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pretrain.data import DataError
from transfer.classification.release_files import (
    ImageListDataset,
    Splits,
    check_listed,
    load_mat,
)

CARS_TEST_LABELS = "cars_test_annos_withlabels.mat"
FLOWERS_MAX_LABEL = 102  # imagelabels.mat holds 1..102 (Nilsback & Zisserman 2008)
FLOWERS_SPLITS = {"train": "trnid", "val": "valid", "test": "tstid"}  # setid.mat's variables


def read_cars(folder: Path, seed: int) -> Splits:
    """Stanford Cars (Krause et al. 2013): devkit/cars_meta.mat (`class_names`, a [1, 196] cell
    of strings), devkit/cars_train_annos.mat and cars_test_annos_withlabels.mat (in the release
    folder, where torchvision expects it, or in devkit/), each an `annotations` [1, N] struct
    array with fields bbox_x1, bbox_y1, bbox_x2, bbox_y2, class (1-based) and fname; images in
    cars_train/ and cars_test/. (devkit/cars_test_annos.mat has no class field: the test labels
    were published later in the _withlabels file.)"""
    devkit = folder / "devkit"
    meta_file = devkit / "cars_meta.mat"
    classes = [
        str(name)
        for name in np.atleast_1d(load_mat(meta_file, "cars", ["class_names"])["class_names"])
    ]
    test_labels = folder / CARS_TEST_LABELS
    if not test_labels.is_file() and (devkit / CARS_TEST_LABELS).is_file():
        test_labels = devkit / CARS_TEST_LABELS
    train = _cars_split(devkit / "cars_train_annos.mat", folder / "cars_train", classes, meta_file)
    test = _cars_split(test_labels, folder / "cars_test", classes, meta_file)
    return Splits(train, None, test)


def _cars_split(annotation_file: Path, image_dir: Path, classes: list[str], meta_file: Path):
    annotations = np.atleast_1d(load_mat(annotation_file, "cars", ["annotations"])["annotations"])
    fields = annotations.dtype.names or ()
    if "class" not in fields or "fname" not in fields:
        raise DataError(
            f"{annotation_file} annotations have the fields {list(fields)}, not class and fname; "
            f"use cars_train_annos.mat and {CARS_TEST_LABELS} (the test file with labels)"
        )
    labels = [int(label) for label in annotations["class"]]
    bad = [label for label in labels if not 1 <= label <= len(classes)]
    if bad:
        raise DataError(
            f"{annotation_file} has class {bad[0]} but {meta_file} names {len(classes)} classes "
            "(class is 1-based); the release is inconsistent: download the devkit again"
        )
    paths = [image_dir / str(file_name) for file_name in annotations["fname"]]
    check_listed(paths, annotation_file, "cars")
    return ImageListDataset("cars", classes, paths, [label - 1 for label in labels])


def read_flowers(folder: Path, seed: int) -> Splits:
    """Oxford 102 Flowers (Nilsback & Zisserman 2008): imagelabels.mat (`labels` [1, 8189],
    1..102, the label of image_<id>.jpg at position id), setid.mat (`trnid`, `valid`, `tstid`
    [1, n]: 1-based image ids; train, val and test), jpg/image_<05d id>.jpg. The release names
    no classes: class k (0-based) is called str(k + 1), its label in the release, and there are
    as many classes as the largest label. val is the creators' (BYOL v3, App. D.1)."""
    label_file, setid_file = folder / "imagelabels.mat", folder / "setid.mat"
    labels = _integers(load_mat(label_file, "flowers", ["labels"])["labels"], label_file)
    if labels.size == 0:
        raise DataError(f"{label_file} labels no images; download imagelabels.mat again")
    outside = labels[(labels < 1) | (labels > FLOWERS_MAX_LABEL)]
    if outside.size:
        raise DataError(
            f"{label_file} has label {int(outside[0])} but Oxford Flowers has "
            f"{FLOWERS_MAX_LABEL} classes (labels 1..{FLOWERS_MAX_LABEL}); download "
            "imagelabels.mat again"
        )
    classes = [str(label) for label in range(1, int(labels.max()) + 1)]
    ids = load_mat(setid_file, "flowers", list(FLOWERS_SPLITS.values()))
    splits = []
    for key in FLOWERS_SPLITS.values():
        image_ids = _integers(ids[key], setid_file)
        if image_ids.size and (image_ids.min() < 1 or image_ids.max() > labels.size):
            raise DataError(
                f"{setid_file} `{key}` names image {int(image_ids.max())} but {label_file} "
                f"labels {labels.size} images; the two files are from different releases"
            )
        paths = [folder / "jpg" / f"image_{image_id:05d}.jpg" for image_id in image_ids.tolist()]
        check_listed(paths, setid_file, "flowers")
        targets = (labels[image_ids - 1] - 1).tolist()
        splits.append(ImageListDataset("flowers", classes, paths, targets))
    return Splits(*splits)


def _integers(values: np.ndarray, path: Path) -> np.ndarray:
    """A .mat numeric array (stored as double or integer) as int64 [N]; fractions refused."""
    array = np.atleast_1d(np.asarray(values)).ravel()
    if array.dtype.kind not in "iuf" or not np.array_equal(array, np.round(array)):
        raise DataError(f"{path} holds values that are not whole numbers; download it again")
    return array.astype(np.int64)
