"""Labelled subsets for semi-supervised fine-tuning: SimCLR split files read and checked, seeded
subsets class-balanced and reproducible (evaluate/splits.py)."""

import hashlib
from pathlib import Path

import pytest

from evaluate.splits import (
    SIMCLR_SUBSET_SIZES,
    image_names,
    labelled_subset,
    read_split_file,
    seeded_subset_indices,
    subset_size,
)
from pretrain.data import DataError, ImageDataset, SyntheticDataset, build_dataset
from tests.image_folders import make_image_folder


class FakeImageNet(ImageDataset):
    """ImageNet file names without pixels: 1,000 classes x 13, train/<wnid>/<wnid>_<k>.JPEG."""

    def __init__(self, root: Path) -> None:
        classes = [f"n{label:08d}" for label in range(1000)]
        self.root = root
        self.paths = [root / wnid / f"{wnid}_{k}.JPEG" for wnid in classes for k in range(13)]
        super().__init__("imagenet", classes, [label for label in range(1000) for _ in range(13)])


def simclr_like_names(images: ImageDataset, count: int) -> list[str]:
    """`count` file names covering every class, in SimCLR's format (one base name per line)."""
    names = image_names(images)
    return names[::13] + [name for i, name in enumerate(names) if i % 13][: count - 1000]


def write_lines(path: Path, names: list[str]) -> Path:
    path.write_text("".join(f"{name}\n" for name in names))
    return path


@pytest.fixture
def imagenet(tmp_path):
    return FakeImageNet(tmp_path / "imagenet" / "train")


def test_simclr_file_is_read_into_sorted_indices(imagenet, tmp_path):
    names = simclr_like_names(imagenet, SIMCLR_SUBSET_SIZES[1])
    assert names[0] == "n00000000_0.JPEG" and len(names) == 12_811
    path = write_lines(tmp_path / "1percent.txt", names)
    indices = read_split_file(path, imagenet, fraction=1)
    assert indices == sorted(indices) and len(set(indices)) == 12_811
    assert {imagenet.paths[i].name for i in indices} == set(names)
    assert {imagenet.targets[i] for i in indices} == set(range(1000))
    subset = labelled_subset(imagenet, 1, seed=0, out_dir=tmp_path / "out", split_file=path)
    assert subset.source == "split-file" and subset.indices == indices
    assert subset.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_missing_names_are_listed(imagenet, tmp_path):
    names = simclr_like_names(imagenet, 12_811)
    names[5:8] = ["n00000005_99.JPEG", "n00000006_99.JPEG", "n00000007_99.JPEG"]
    path = write_lines(tmp_path / "1percent.txt", names)
    with pytest.raises(DataError, match=r"3 of the 12811 images .* not under") as error:
        read_split_file(path, imagenet, fraction=1)
    assert "n00000005_99.JPEG" in str(error.value) and "n00000007_99.JPEG" in str(error.value)


def test_wrong_count_names_both_fractions(imagenet, tmp_path):
    path = write_lines(tmp_path / "1percent.txt", simclr_like_names(imagenet, 12_811))
    with pytest.raises(DataError, match=r"names 12,811 images, but a 10% subset .* has 128,116"):
        read_split_file(path, imagenet, fraction=10)
    short = write_lines(tmp_path / "short.txt", simclr_like_names(imagenet, 12_000))
    with pytest.raises(DataError, match=r"names 12,000 images, but a 1% subset .* has 12,811"):
        read_split_file(short, imagenet, fraction=1)


def test_duplicate_lines_are_refused(imagenet, tmp_path):
    names = simclr_like_names(imagenet, 12_811)
    names[-1] = names[0]  # right count, one image twice
    path = write_lines(tmp_path / "1percent.txt", names)
    with pytest.raises(DataError, match=r"1 image\(s\) more than once .*n00000000_0\.JPEG"):
        read_split_file(path, imagenet, fraction=1)


def test_every_class_must_be_covered(imagenet, tmp_path):
    others = [name for name in image_names(imagenet) if not name.startswith("n00000003_")]
    names = others[::13] + [name for i, name in enumerate(others) if i % 13][: 12_811 - 999]
    path = write_lines(tmp_path / "1percent.txt", names)
    with pytest.raises(DataError, match=r"no image of 1 class\(es\) .*n00000003"):
        read_split_file(path, imagenet, fraction=1)


def test_split_file_of_another_data_set(imagenet, tmp_path):
    fmnist_like = [f"fmnist-train-{index:06d}" for index in range(12_811)]
    path = write_lines(tmp_path / "fmnist-1pct.txt", fmnist_like)
    with pytest.raises(DataError, match="none of the 12811 names .* another data set"):
        read_split_file(path, imagenet, fraction=1)
    imagenet_file = write_lines(tmp_path / "in.txt", simclr_like_names(imagenet, 600))
    synthetic = SyntheticDataset(num_images=6000, image_size=8, seed=0)
    with pytest.raises(DataError, match="another data set"):
        read_split_file(imagenet_file, synthetic, fraction=10)


def test_imagenet_needs_the_simclr_file(imagenet, tmp_path):
    with pytest.raises(DataError, match=r"--split-file: SimCLR's 10percent\.txt"):
        labelled_subset(imagenet, 10, seed=0, out_dir=tmp_path)
    with pytest.raises(DataError, match="1 or 10"):
        labelled_subset(imagenet, 5, seed=0, out_dir=tmp_path)


def test_seeded_subset_is_class_balanced_and_identical_across_calls(tmp_path):
    images = SyntheticDataset(num_images=1000, image_size=8, num_classes=10, seed=0)
    held = list(range(0, 1000, 10))  # a held-out split the subset must avoid
    first = labelled_subset(images, 10, seed=3, out_dir=tmp_path / "a", exclude=held)
    again = labelled_subset(images, 10, seed=3, out_dir=tmp_path / "b", exclude=held)
    assert len(first.indices) == subset_size(images, 10) == 100
    labels = [images.targets[index] for index in first.indices]
    assert all(labels.count(label) == 10 for label in range(10))
    assert not set(first.indices) & set(held)
    assert (again.indices, again.sha256) == (first.indices, first.sha256)
    assert first.path.read_bytes() == again.path.read_bytes() and first.source == "seeded"
    lines = first.path.read_text().splitlines()
    assert lines == [f"synthetic-train-{index:06d}" for index in first.indices]
    assert read_split_file(first.path, images, fraction=10) == first.indices  # shareable
    other = seeded_subset_indices(images, 10, seed=4, exclude=held)
    assert other != first.indices and len(other) == 100


def test_folder_subset_round_trips_through_its_file(tmp_path):
    make_image_folder(tmp_path / "data" / "train", classes=("a", "b", "c", "d"), per_class=50)
    train = build_dataset("folder", str(tmp_path / "data"), "train")
    subset = labelled_subset(train, 10, seed=0, out_dir=tmp_path / "splits")
    lines = subset.path.read_text().splitlines()
    assert sorted(line.split("/")[0] for line in lines) == [c for c in "abcd" for _ in range(5)]
    assert all((tmp_path / "data" / "train" / line).is_file() for line in lines)
    given = labelled_subset(train, 10, seed=9, out_dir=tmp_path, split_file=subset.path)
    assert given.indices == subset.indices and given.sha256 == subset.sha256
