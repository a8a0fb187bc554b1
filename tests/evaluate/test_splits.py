"""Held-out split (BYOL v3, App. C.1: 10,009 ImageNet images; 10% elsewhere) and split checks."""

import hashlib

import pytest

from evaluate.splits import (
    IMAGENET_HELDOUT,
    balanced_indices,
    heldout_split,
    train_and_eval_sets,
)
from pretrain.data import DataError, ImageDataset, SyntheticDataset
from tests.image_folders import make_image_folder


def test_heldout_is_ten_percent_per_class_disjoint_and_deterministic(tmp_path):
    images = SyntheticDataset(num_images=200, image_size=8, num_classes=4, seed=0)
    split = heldout_split(images, seed=0, out_dir=tmp_path)
    assert sorted(split.train + split.heldout) == list(range(200))
    assert not set(split.train) & set(split.heldout)
    held_labels = [images.targets[i] for i in split.heldout]
    assert all(held_labels.count(label) == 5 for label in range(4))  # 10% of 50 per class
    assert split.name == "heldout-20"
    assert split.sha256 == hashlib.sha256(split.path.read_bytes()).hexdigest()
    again = heldout_split(images, seed=0, out_dir=tmp_path / "elsewhere")
    assert (again.heldout, again.sha256) == (split.heldout, split.sha256)
    assert heldout_split(images, seed=1, out_dir=tmp_path).heldout != split.heldout


def test_imagenet_holds_out_10009_class_balanced_images(tmp_path):
    targets = [label for label in range(1000) for _ in range(13)]
    imagenet = ImageDataset("imagenet", [f"n{c:08d}" for c in range(1000)], targets)
    split = heldout_split(imagenet, seed=0, out_dir=tmp_path)
    assert len(split.heldout) == IMAGENET_HELDOUT and split.name == "heldout-10009"
    per_class = [0] * 1000
    for index in split.heldout:
        per_class[targets[index]] += 1
    assert sorted(set(per_class)) == [10, 11] and per_class.count(11) == 9
    lines = split.path.read_text().splitlines()
    assert lines[0].startswith("#") and len(lines) == 1 + IMAGENET_HELDOUT
    with pytest.raises(DataError, match="leave none"):
        balanced_indices([0, 0, 1, 1], total=4, seed=0)


def test_split_file_names_the_image_files(tmp_path):
    make_image_folder(tmp_path / "data" / "train", per_class=10)
    make_image_folder(tmp_path / "data" / "val", per_class=2)
    train, evaluated, split_name = train_and_eval_sets("folder", str(tmp_path / "data"))
    assert (len(train), len(evaluated), split_name) == (30, 6, "val")
    split = heldout_split(train, seed=0, out_dir=tmp_path)
    rows = [line.split("\t") for line in split.path.read_text().splitlines()[1:]]
    assert len(rows) == 3 and {row[1] for row in rows} == {"a", "b", "c"}
    assert all(row[2] == f"{row[1]}/img_{int(row[0]) % 10:03d}.png" for row in rows)


def test_eval_split_with_other_classes_is_refused(tmp_path):
    make_image_folder(tmp_path / "train")
    make_image_folder(tmp_path / "val", classes=("a", "b"))
    with pytest.raises(DataError, match=r"2 classes, train has 3.*only in train: \['c'\]"):
        train_and_eval_sets("folder", str(tmp_path))
    with pytest.raises(DataError, match="DIR/train"):
        train_and_eval_sets("folder", str(tmp_path / "train"))
