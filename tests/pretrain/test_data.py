"""Readers on data written in the real on-disk formats, and TwoViews (sampler: test_sampling.py)."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pretrain.augment import byol_views
from pretrain.data import (
    DATASETS,
    FASHION_MNIST_CLASSES,
    CifarDataset,
    DataError,
    FashionMnistDataset,
    ImageFolderDataset,
    SubsetDataset,
    SyntheticDataset,
    build_dataset,
    dataset_stats,
    default_root,
    subset_indices,
)
from pretrain.views import EvalView, TwoViews, build_eval_loader, build_pretrain_loader

FMNIST = Path("/usr/share/datasets/fashion-mnist")
IMAGENET_MEAN, IMAGENET_STD = dataset_stats("imagenet")


def _pixels(seed: int, height: int, width: int, channels: int = 3) -> np.ndarray:
    shape = (height, width, channels) if channels > 1 else (height, width)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# ImageFolder


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """root/{cat,dog,empty}: PNG (lossless, so pixels are checkable), JPEG, gray, nested, noise."""
    root = tmp_path / "images"
    (root / "dog" / "nested").mkdir(parents=True)
    (root / "cat").mkdir()
    (root / "empty").mkdir()  # a class without images is allowed
    (root / ".hidden").mkdir()  # not a class
    Image.fromarray(_pixels(0, 6, 5)).save(root / "cat" / "b.png")
    Image.fromarray(_pixels(1, 8, 8)).save(root / "cat" / "a.JPG", format="JPEG")
    Image.fromarray(_pixels(2, 4, 7, channels=1)).save(root / "dog" / "gray.png")
    Image.fromarray(_pixels(3, 9, 9)).save(root / "dog" / "nested" / "deep.jpeg", format="JPEG")
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


def test_image_folder_layout_order_and_pixels(image_folder: Path) -> None:
    dataset = ImageFolderDataset(image_folder)
    assert dataset.classes == ["cat", "dog", "empty"] and dataset.num_classes == 3
    relative = [p.relative_to(image_folder).as_posix() for p in dataset.paths]
    assert relative == ["cat/a.JPG", "cat/b.png", "dog/gray.png", "dog/nested/deep.jpeg"]
    assert dataset.targets == [0, 0, 1, 1] and len(dataset) == 4 and dataset.name == "folder"
    image, label = dataset[1]
    assert image.dtype == torch.uint8 and label == 0
    assert torch.equal(image, torch.from_numpy(_pixels(0, 6, 5)).permute(2, 0, 1))
    gray, _ = dataset.load(2)  # gray sources are converted to RGB: three equal channels
    assert gray.shape == (3, 4, 7) and torch.equal(gray[0], gray[2])
    assert torch.equal(gray[1], torch.from_numpy(_pixels(2, 4, 7, channels=1)))
    assert dataset[0][0].shape == (3, 8, 8)


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist; pass --data"):
        ImageFolderDataset(tmp_path / "missing")
    with pytest.raises(DataError, match="no class sub-directories"):
        ImageFolderDataset(tmp_path)
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="no images"):
        ImageFolderDataset(tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_image_names_the_file(image_folder: Path, damage: str) -> None:
    path = image_folder / "cat" / "a.JPG"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\xff\xd8garbage" * 9)
    dataset = ImageFolderDataset(image_folder)
    with pytest.raises(DataError, match="a.JPG") as error:
        dataset[0]
    assert str(path) in str(error.value)
    assert dataset[1][0].shape == (3, 6, 5)  # the other files still load


# ---------------------------------------------------------------------------------------------
# CIFAR


def _write_cifar(root: Path, num_classes: int, per_batch: int = 4) -> dict[str, np.ndarray]:
    """The python-pickle batches with the real keys; returns the pixel rows written per file."""
    if num_classes == 10:
        directory, label_key = root / "cifar-10-batches-py", b"labels"
        files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        meta = ("batches.meta", {b"label_names": [f"c{k}".encode() for k in range(10)]})
    else:
        directory, label_key = root / "cifar-100-python", b"fine_labels"
        files = ["train", "test"]
        meta = ("meta", {b"fine_label_names": [f"f{k}".encode() for k in range(100)]})
    directory.mkdir(parents=True)
    written = {}
    for seed, file in enumerate(files):
        rng = np.random.default_rng(seed)
        rows = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        batch = {
            b"batch_label": file.encode(),
            label_key: rng.integers(0, num_classes, per_batch).tolist(),
            b"data": rows,
        }
        if num_classes == 100:
            batch[b"coarse_labels"] = [0] * per_batch
        (directory / file).write_bytes(pickle.dumps(batch))
        written[file] = (rows, batch[label_key])
    (directory / meta[0]).write_bytes(pickle.dumps(meta[1]))
    return written


def test_cifar10_batches(tmp_path: Path) -> None:
    written = _write_cifar(tmp_path, 10)
    train = CifarDataset(tmp_path, "train", num_classes=10)
    assert len(train) == 20 and train.classes[3] == "c3" and train.name == "cifar10"
    rows, labels = written["data_batch_2"]
    image, label = train[4 + 1]  # second image of the second batch
    assert image.shape == (3, 32, 32) and label == labels[1]
    # A row is 1024 red, then 1024 green, then 1024 blue values, each 32 rows of 32.
    assert image[1, 2, 3] == rows[1, 1024 + 2 * 32 + 3]
    assert torch.equal(image.flatten(), torch.from_numpy(rows[1]))
    test = CifarDataset(tmp_path / "cifar-10-batches-py", "test")  # the batches dir itself
    assert test.targets == list(written["test_batch"][1])


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    written = _write_cifar(tmp_path, 100, per_batch=6)
    dataset = build_dataset("cifar100", tmp_path, "test")
    assert dataset.num_classes == 100 and dataset.classes[42] == "f42"
    assert dataset.targets == list(written["test"][1])
    assert torch.equal(dataset[5][0].flatten(), torch.from_numpy(written["test"][0][5]))


def test_cifar_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cifar-10-python.tar.gz"):
        CifarDataset(tmp_path, "train")
    _write_cifar(tmp_path, 10)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        CifarDataset(tmp_path, "train")
    with pytest.raises(DataError, match="'train' or 'test'"):
        CifarDataset(tmp_path, "val")
    evil = tmp_path / "cifar-10-batches-py" / "test_batch"
    evil.write_bytes(pickle.dumps({b"data": Path("/")}))  # a class that is not numpy
    with pytest.raises(DataError, match="refusing"):
        CifarDataset(tmp_path, "test")


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST


def _write_idx(path: Path, magic: int, array: np.ndarray, compress: bool) -> None:
    header = np.array([magic, *array.shape], dtype=">i4").tobytes()
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_files(tmp_path: Path, compress: bool) -> None:
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 0, 9, 1, 1], dtype=np.uint8)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", 2051, images, compress)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", 2049, labels, compress)
    dataset = FashionMnistDataset(tmp_path, "test")
    assert len(dataset) == 5 and dataset.targets == [3, 0, 9, 1, 1]
    image, label = dataset[2]
    assert image.shape == (1, 28, 28) and label == 9
    assert torch.equal(image[0], torch.from_numpy(images[2]))


def test_idx_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        FashionMnistDataset(tmp_path, "train")
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte", 2051, images, compress=False)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", 2049, np.zeros(3), compress=False)
    with pytest.raises(DataError, match="4 train images but 3 labels"):
        FashionMnistDataset(tmp_path, "train")
    _write_idx(tmp_path / "train-labels-idx1-ubyte", 2051, np.zeros(4), compress=False)
    with pytest.raises(DataError, match="magic number 2049"):
        FashionMnistDataset(tmp_path, "train")
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="header says"):
        FashionMnistDataset(tmp_path, "train")


@pytest.mark.skipif(not FMNIST.is_dir(), reason="no Fashion-MNIST at " + str(FMNIST))
def test_real_fashion_mnist() -> None:
    assert default_root("fmnist") == str(FMNIST)
    train = build_dataset("fmnist", None, "train")
    test = FashionMnistDataset(split="test")
    assert (len(train), len(test)) == (60000, 10000)
    assert train.classes == list(FASHION_MNIST_CLASSES) and train.num_classes == 10
    labels = gzip.decompress((FMNIST / "train-labels-idx1-ubyte.gz").read_bytes())
    pixels = gzip.decompress((FMNIST / "train-images-idx3-ubyte.gz").read_bytes())
    image, label = train[0]
    assert label == labels[8] and train.targets[-1] == labels[-1]  # after the 8-byte header
    assert torch.equal(
        image.flatten(), torch.frombuffer(bytearray(pixels[16 : 16 + 784]), dtype=torch.uint8)
    )
    assert np.bincount(test.targets).tolist() == [1000] * 10


# ---------------------------------------------------------------------------------------------
# Synthetic, build_dataset, stats, subsets


def test_synthetic_is_deterministic_balanced_and_learnable() -> None:
    train, test = (
        build_dataset("synthetic", None, "train"),
        build_dataset("synthetic", None, "test"),
    )
    assert (len(train), len(test)) == (512, 256) and train[0][0].shape == (3, 32, 32)
    assert torch.equal(train.images, SyntheticDataset(512, seed=0).images)
    assert not torch.equal(test.images, SyntheticDataset(256, seed=0).images)
    assert np.bincount(train.targets).tolist() == [512 // 10 + (k < 2) for k in range(10)]

    def features(dataset: SyntheticDataset) -> torch.Tensor:  # random linear features, ReLU
        projection = torch.randn(3 * 32 * 32, 64, generator=torch.Generator().manual_seed(0))
        return torch.relu(dataset.images.flatten(1).float() / 255 @ projection)

    train_x, test_x = features(train), features(test)
    train_y, test_y = torch.tensor(train.targets), torch.tensor(test.targets)
    centroids = torch.stack([train_x[train_y == k].mean(0) for k in range(10)])
    accuracy = (torch.cdist(test_x, centroids).argmin(1) == test_y).float().mean()
    assert accuracy > 0.25  # chance is 0.1; the class structure is shared across seeds


def test_build_dataset_names_and_splits(tmp_path: Path, image_folder: Path) -> None:
    assert DATASETS == ("imagenet", "folder", "cifar10", "cifar100", "fmnist", "synthetic")
    with pytest.raises(DataError, match="choose one of imagenet, folder, cifar10"):
        build_dataset("mnist", None, "train")
    with pytest.raises(DataError, match=r"\('train', 'val'\)"):
        build_dataset("imagenet", tmp_path, "test")
    with pytest.raises(DataError, match="needs --data"):
        build_dataset("cifar10", None, "train")
    assert len(build_dataset("folder", image_folder, "train")) == 4  # no train/: the root itself
    (tmp_path / "imagenet" / "val" / "n01").mkdir(parents=True)
    Image.fromarray(_pixels(0, 4, 4)).save(tmp_path / "imagenet" / "val" / "n01" / "x.png")
    imagenet = build_dataset("imagenet", tmp_path / "imagenet", "val")
    assert imagenet.name == "imagenet" and imagenet.classes == ["n01"]
    folder = build_dataset("folder", tmp_path / "imagenet", "val")  # root/val exists: used
    assert folder.classes == ["n01"]


def test_dataset_stats() -> None:
    assert dataset_stats("imagenet") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert dataset_stats("folder") == dataset_stats("synthetic") == dataset_stats("imagenet")
    assert dataset_stats("fmnist") == ((0.2860,) * 3, (0.3530,) * 3)
    assert dataset_stats("cifar10")[0] == (0.4914, 0.4822, 0.4465)
    with pytest.raises(DataError):
        dataset_stats("mnist")


def test_subset_indices_balanced_and_deterministic() -> None:
    targets = [k for k in range(4) for _ in range(10 + k)]  # 10, 11, 12, 13 images per class
    chosen = subset_indices(targets, num_per_class=3, seed=1)
    assert chosen == sorted(chosen) and chosen == subset_indices(targets, num_per_class=3, seed=1)
    assert chosen != subset_indices(targets, num_per_class=3, seed=2)
    assert np.bincount(np.asarray(targets)[chosen]).tolist() == [3, 3, 3, 3]
    fifth = subset_indices(targets, fraction=0.2, seed=0)  # 0.2 x 13 rounds to 3
    assert np.bincount(np.asarray(targets)[fifth]).tolist() == [2, 2, 2, 3]
    with pytest.raises(DataError, match="fewer than the 11"):
        subset_indices(targets, num_per_class=11)
    with pytest.raises(DataError, match="exactly one"):
        subset_indices(targets, num_per_class=1, fraction=0.5)
    synthetic = SyntheticDataset(40)
    picked = subset_indices(synthetic.targets, num_per_class=2, seed=0)
    subset = SubsetDataset(synthetic, picked)
    assert len(subset) == 20 and subset.classes == synthetic.classes
    assert np.bincount(subset.targets).tolist() == [2] * 10
    assert torch.equal(subset[1][0], synthetic[picked[1]][0])


# ---------------------------------------------------------------------------------------------
# Views


def _two_views(dataset: SyntheticDataset, seed: int = 0) -> TwoViews:
    view_1, view_2 = byol_views(small_images=True)
    return TwoViews(dataset, view_1, view_2, 16, seed, IMAGENET_MEAN, IMAGENET_STD)


def test_two_views_depend_only_on_seed_epoch_index() -> None:
    views = _two_views(SyntheticDataset(8))
    first, second, label = views[(3, 5)]
    assert first.shape == second.shape == (3, 16, 16) and first.dtype == torch.float32
    assert label == views.dataset.targets[5] and not torch.equal(first, second)
    again = views[(3, 5)]
    assert torch.equal(first, again[0]) and torch.equal(second, again[1])
    assert not torch.equal(first, views[(4, 5)][0])  # another epoch, another draw
    assert not torch.equal(first, _two_views(SyntheticDataset(8), seed=1)[(3, 5)][0])


def test_pretrain_loader_is_independent_of_workers() -> None:
    dataset = SyntheticDataset(24, image_size=16)
    runs = []
    for num_workers in (0, 2):
        loader, sampler = build_pretrain_loader(
            dataset,
            view_1=byol_views(True)[0],
            view_2=byol_views(True)[1],
            out_size=16,
            batch_size=4,
            seed=0,
            rank=0,
            world_size=1,
            num_workers=num_workers,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
        )
        sampler.set_epoch(1, start_step=2)
        runs.append(list(loader))
        assert len(loader) == sampler.steps_per_epoch - 2 == 4
    for (v1_a, v2_a, y_a), (v1_b, v2_b, y_b) in zip(*runs, strict=True):
        assert v1_a.shape == (4, 3, 16, 16)
        assert torch.equal(v1_a, v1_b) and torch.equal(v2_a, v2_b) and torch.equal(y_a, y_b)


def test_eval_loader() -> None:
    dataset = SyntheticDataset(10)
    loader = build_eval_loader(
        dataset, out_size=24, batch_size=4, num_workers=0, mean=(0.5,) * 3, std=(0.5,) * 3
    )
    batches = list(loader)
    assert [len(y) for _, y in batches] == [4, 4, 2]
    assert torch.cat([y for _, y in batches]).tolist() == dataset.targets
    image, _ = EvalView(dataset, 24, (0.5,) * 3, (0.5,) * 3)[0]
    assert image.shape == (3, 24, 24) and torch.equal(image, batches[0][0][0])
    assert -1.0 <= image.min() and image.max() <= 1.0
