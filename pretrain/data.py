"""Image-classification readers (sample order: sampling.py; views: views.py).

Every package reads labelled images through this module (pretraining, linear probe, semi-supervised,
transfer). A reader is an `ImageDataset`: `load(index) -> (uint8 image [C, H, W], label)`, with
`targets`, `classes`, `num_classes` and `name`; C is 1 for grayscale sources (Fashion-MNIST),
else 3.

Readers: `ImageFolderDataset` (ImageNet layout), `CifarDataset` (python pickle batches),
`FashionMnistDataset` (idx files), `SyntheticDataset` (generated, for tests and smoke runs);
`build_dataset(name, root, split)` picks one by the `--dataset` name.
"""

from __future__ import annotations

import colorsys
import gzip
import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from pretrain.augment import IMAGENET_MEAN, IMAGENET_STD
from results.errors import ByolBenchError

DATASETS = ("imagenet", "folder", "cifar10", "cifar100", "fmnist", "synthetic")
SPLITS = {  # valid splits per data set (folder: DIR/<split> if it exists, else DIR itself)
    "imagenet": ("train", "val"),
    "folder": ("train", "val", "test"),
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "fmnist": ("train", "test"),
    "synthetic": ("train", "test"),
}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"  # Debian's copy; override with --data
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

Stats = tuple[tuple[float, float, float], tuple[float, float, float]]
_IMAGENET_STATS: Stats = (IMAGENET_MEAN, IMAGENET_STD)
_STATS: dict[str, Stats] = {  # per-channel mean/std of the training images, pixel values in [0, 1]
    "imagenet": _IMAGENET_STATS,
    "folder": _IMAGENET_STATS,
    "synthetic": _IMAGENET_STATS,
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "fmnist": ((0.2860,) * 3, (0.3530,) * 3),  # one gray channel, replicated: views are RGB
}


class DataError(ByolBenchError, ValueError):
    """A data set is missing, malformed or unreadable; the message says what to do."""


# ---------------------------------------------------------------------------------------------
# Readers


class ImageDataset(Dataset):
    """Base of every reader: labelled uint8 images [C, H, W] with `targets` and `classes`.

    In-memory readers pass `images` [N, C, H, W]; file readers override `load` instead.
    """

    def __init__(
        self, name: str, classes: Sequence[str], targets: Sequence[int], images=None
    ) -> None:
        self.name = name
        self.classes = list(classes)
        self.targets = [int(t) for t in targets]
        self.images: torch.Tensor | None = images

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def load(self, index: int) -> tuple[torch.Tensor, int]:
        """The image as uint8 [C, H, W] (a copy, safe to modify) and its label."""
        return self.images[index].clone(), self.targets[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.load(index)

    def __len__(self) -> int:
        return len(self.targets)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, {len(self)} images, {self.num_classes} classes)"
        )


class ImageFolderDataset(ImageDataset):
    """ImageNet layout `root/<class>/**/<image>`: classes are the sorted sub-directory names.

    Files are found recursively in each class directory, in sorted path order, by extension
    (case-insensitive, IMAGE_EXTENSIONS); images are decoded with PIL and converted to RGB.
    """

    def __init__(self, root: str | os.PathLike, name: str = "folder") -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(
                f"data directory {self.root} does not exist; pass --data DIR with the images in "
                "DIR/<class>/<image>.jpg (ImageNet layout)"
            )
        classes = sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        if not classes:
            raise DataError(
                f"{self.root} has no class sub-directories; put the images in "
                f"{self.root}/<class>/<image>.jpg or pass the right --data DIR"
            )
        self.paths: list[Path] = []
        targets = []
        for label, class_name in enumerate(classes):
            found = sorted(
                Path(dirpath, file)
                for dirpath, _, files in os.walk(self.root / class_name, followlinks=True)
                for file in files
                if file.lower().endswith(IMAGE_EXTENSIONS)
            )
            self.paths += found
            targets += [label] * len(found)
        if not self.paths:
            raise DataError(
                f"no images ({', '.join(IMAGE_EXTENSIONS)}) under the {len(classes)} class "
                f"directories of {self.root}; check that --data points at the right directory"
            )
        super().__init__(name, classes, targets)

    def load(self, index: int) -> tuple[torch.Tensor, int]:
        return decode_rgb(self.paths[index]), self.targets[index]


def decode_rgb(path: Path) -> torch.Tensor:
    """The image file as uint8 [3, H, W] RGB; a file PIL cannot decode is a DataError."""
    try:
        with Image.open(path) as image:
            array = np.array(image.convert("RGB"), dtype=np.uint8)  # [H, W, 3]
    except (OSError, SyntaxError, ValueError) as error:  # PIL's decode errors
        raise DataError(
            f"cannot read image {path} ({error}); delete or replace the file"
        ) from error
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only, so a data file cannot run code."""

    _NUMPY_NAMES = {"_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer"}

    def find_class(self, module: str, name: str):
        is_numpy = module.split(".")[0] == "numpy" and name in self._NUMPY_NAMES
        if is_numpy or (module, name) == ("_codecs", "encode"):  # protocol-2 bytes from Python 3
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _unpickle(path: Path) -> dict[str, object]:
    try:
        with open(path, "rb") as file:
            content = _NumpyOnlyUnpickler(file, encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError) as error:
        raise DataError(f"cannot read CIFAR batch {path} ({error}); download it again") from error
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in content.items()}


class CifarDataset(ImageDataset):
    """CIFAR-10/100 from the python pickle batches (www.cs.toronto.edu/~kriz/cifar.html).

    `root` is the batches directory (`cifar-10-batches-py`, `cifar-100-python`) or its parent.
    CIFAR-100 uses the 100 fine labels. Images are [3, 32, 32] uint8.
    """

    # num_classes: (directory, train files, test files, meta file, label key, class names key)
    _LAYOUT = {
        10: (
            "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)],
            ["test_batch"],
            "batches.meta",
            "labels",
            "label_names",
        ),
        100: ("cifar-100-python", ["train"], ["test"], "meta", "fine_labels", "fine_label_names"),
    }

    def __init__(self, root: str | os.PathLike, split: str = "train", num_classes: int = 10):
        if num_classes not in self._LAYOUT:
            raise DataError(f"CIFAR has 10 or 100 classes, not {num_classes}")
        layout = self._LAYOUT[num_classes]
        directory, train_files, test_files, meta_file, label_key, names_key = layout
        files = {"train": train_files, "test": test_files}.get(split)
        if files is None:
            raise DataError(f"CIFAR split must be 'train' or 'test', not {split!r}")
        root = Path(root)
        batches_dir = root / directory if (root / directory).is_dir() else root
        missing = [f for f in [*files, meta_file] if not (batches_dir / f).is_file()]
        if missing:
            raise DataError(
                f"CIFAR-{num_classes} files {missing} not found in {root} or {root / directory}; "
                f"pass --data DIR where DIR/{directory} is the extracted "
                f"cifar-{num_classes}-python.tar.gz"
            )
        images, targets = [], []
        for file in files:
            batch = _unpickle(batches_dir / file)
            data = np.asarray(batch["data"], dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(batch[label_key]) != len(data):
                raise DataError(f"{batches_dir / file} is not a CIFAR batch; download it again")
            images.append(data.reshape(-1, 3, 32, 32))  # rows are stored channel-major: R, G, B
            targets += list(batch[label_key])
        names = _unpickle(batches_dir / meta_file)[names_key]
        names = [n.decode() if isinstance(n, bytes) else n for n in names]
        images = torch.from_numpy(np.concatenate(images))  # [N, 3, 32, 32]
        super().__init__(f"cifar{num_classes}", names, targets, images)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """One idx file (LeCun's MNIST format): big-endian magic, dimension sizes, then uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as file:
            raw = file.read()
    except (OSError, EOFError) as error:
        raise DataError(f"cannot read {path} ({error}); download it again") from error
    ndim = magic - 2048  # 2049: labels [N], 2051: images [N, rows, cols]
    header_size = 4 * (1 + ndim)
    header = np.frombuffer(raw[:header_size], dtype=">i4")  # magic, then the dimension sizes
    if len(header) != 1 + ndim or header[0] != magic:
        raise DataError(f"{path} is not an idx file with magic number {magic}; download it again")
    shape = tuple(int(n) for n in header[1:])
    data = np.frombuffer(raw, dtype=np.uint8, offset=header_size)
    if data.size != np.prod(shape):
        raise DataError(f"{path} holds {data.size} bytes of data, its header says {shape}")
    return data.reshape(shape)


class FashionMnistDataset(ImageDataset):
    """Fashion-MNIST (Xiao et al. 2017) from its idx files, gzipped or not: 60,000 train and
    10,000 test gray images [1, 28, 28], loaded into memory once (47 MB for train)."""

    def __init__(self, root: str | os.PathLike = FASHION_MNIST_ROOT, split: str = "train"):
        prefix = {"train": "train", "test": "t10k"}.get(split)
        if prefix is None:
            raise DataError(f"Fashion-MNIST split must be 'train' or 'test', not {split!r}")
        root = Path(root)
        images = _read_idx(self._find(root, f"{prefix}-images-idx3-ubyte"), magic=2051)
        labels = _read_idx(self._find(root, f"{prefix}-labels-idx1-ubyte"), magic=2049)
        if len(images) != len(labels):
            raise DataError(f"{root}: {len(images)} {split} images but {len(labels)} labels")
        if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
            raise DataError(f"{root}: {split} labels go up to {labels.max()}, expected 0..9")
        images = torch.from_numpy(images.copy()).unsqueeze(1)  # [N, 1, 28, 28]
        super().__init__("fmnist", FASHION_MNIST_CLASSES, labels.tolist(), images)

    @staticmethod
    def _find(root: Path, stem: str) -> Path:
        for path in (root / stem, root / f"{stem}.gz"):
            if path.is_file():
                return path
        raise DataError(
            f"{root / stem}[.gz] not found; pass --data DIR with the Fashion-MNIST idx files "
            "(github.com/zalandoresearch/fashion-mnist)"
        )


class SyntheticDataset(ImageDataset):
    """Generated RGB images, learnable but not trivial, for tests and smoke runs (no files).

    Class k (of K) has its own stripe orientation (k/K x 180 deg) and frequency, and a mean hue of
    k/K turns; each image draws its hue around that (sd 0.15 turns, so colour alone is a weak
    cue), its saturation, brightness, stripe phase, the position of a disc in the complementary
    colour, and pixel noise. Only the draws depend on `seed`: train and test sets with different
    seeds share the classes. Classes are balanced. On 32 px images with K=10, a linear probe
    on a randomly initialised ResNet-18 reaches about 0.75 test accuracy (chance 0.1).
    """

    def __init__(
        self, num_images: int = 512, image_size: int = 32, num_classes: int = 10, seed: int = 0
    ) -> None:
        rng = np.random.default_rng(seed)
        labels = rng.permutation(np.arange(num_images) % num_classes)
        hue = labels / num_classes + rng.normal(0.0, 0.15, num_images)
        saturation, value = rng.uniform(0.4, 0.9, num_images), rng.uniform(0.6, 1.0, num_images)
        colours = np.array(
            [colorsys.hsv_to_rgb(h % 1.0, s, v) for h, s, v in zip(hue, saturation, value)]
        ).reshape(num_images, 3)
        angle = np.pi * labels / num_classes + rng.normal(0.0, 0.05, num_images)
        frequency = 2.0 + labels % 3  # stripes per image side
        y, x = np.meshgrid(*[np.linspace(0, 1, image_size)] * 2, indexing="ij")  # [S, S]
        along = x * np.cos(angle)[:, None, None] + y * np.sin(angle)[:, None, None]  # [N, S, S]
        phase = rng.uniform(0, 2 * np.pi, num_images)[:, None, None]
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * frequency[:, None, None] * along + phase)
        pixels = stripes[..., None] * colours[:, None, None, :]  # [N, S, S, 3]
        centre = rng.uniform(0.25, 0.75, (num_images, 2))
        disc = (y - centre[:, 0, None, None]) ** 2 + (x - centre[:, 1, None, None]) ** 2 < 0.15**2
        pixels[disc] = (1.0 - colours)[np.nonzero(disc)[0]]
        pixels += rng.normal(0.0, 0.08, pixels.shape)
        pixels = np.clip(pixels * 255 + 0.5, 0, 255).astype(np.uint8)
        images = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()  # [N, 3, S, S]
        classes = [f"class_{k}" for k in range(num_classes)]
        super().__init__("synthetic", classes, labels.tolist(), images)


class SubsetDataset(ImageDataset):
    """The images of `dataset` at `indices`, keeping the reader interface (targets, classes)."""

    def __init__(self, dataset: ImageDataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = [int(i) for i in indices]
        targets = [dataset.targets[i] for i in self.indices]
        super().__init__(dataset.name, dataset.classes, targets)

    def load(self, index: int) -> tuple[torch.Tensor, int]:
        return self.dataset.load(self.indices[index])


class ConcatImages(ImageDataset):
    """The images of several sets with the same classes, one after the other (train + val)."""

    def __init__(self, parts: Sequence[ImageDataset]) -> None:
        if any(part.classes != parts[0].classes for part in parts):
            raise DataError("sets joined into one must have the same classes in the same order")
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [len(part) for part in parts]).tolist()
        targets = [target for part in parts for target in part.targets]
        super().__init__(parts[0].name, parts[0].classes, targets)

    def load(self, index: int) -> tuple[torch.Tensor, int]:
        part = int(np.searchsorted(self.starts, index, side="right")) - 1
        return self.parts[part].load(index - self.starts[part])


def subset_indices(
    targets: Sequence[int],
    num_per_class: int | None = None,
    fraction: float | None = None,
    seed: int = 0,
) -> list[int]:
    """Sorted indices of a class-balanced random subset: `num_per_class` images of every class,
    or `fraction` of every class (rounded, at least one). Deterministic in `seed`."""
    if (num_per_class is None) == (fraction is None):
        raise DataError("subset_indices needs exactly one of num_per_class and fraction")
    if fraction is not None and not 0 < fraction <= 1:
        raise DataError(f"subset fraction must be in (0, 1], not {fraction}")
    targets = np.asarray(targets)
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(targets):
        members = np.flatnonzero(targets == label)
        take = num_per_class if fraction is None else max(1, round(fraction * len(members)))
        if take > len(members):
            raise DataError(
                f"class {label} has {len(members)} images, fewer than the {take} requested"
            )
        chosen.append(rng.permutation(members)[:take])
    return sorted(np.concatenate(chosen).tolist()) if chosen else []


def default_root(name: str) -> str | None:
    """The data root used when --data is not given (None: the data set needs --data)."""
    return FASHION_MNIST_ROOT if name == "fmnist" else None


def dataset_stats(name: str) -> Stats:
    """(mean, std) per RGB channel used to normalise `name`'s images (ImageNet's for folders)."""
    _check_name(name)
    return _STATS[name]


def build_dataset(name: str, root: str | os.PathLike | None, split: str) -> ImageDataset:
    """The reader for `--dataset name --data root` and `split` (see SPLITS)."""
    _check_name(name)
    if split not in SPLITS[name]:
        raise DataError(f"{name} has splits {SPLITS[name]}, not {split!r}")
    if name == "synthetic":  # a different seed per split: same classes, different images
        if split == "train":
            return SyntheticDataset(num_images=512, seed=0)
        return SyntheticDataset(num_images=256, seed=1)
    root = root if root is not None else default_root(name)
    if root is None:
        raise DataError(f"--dataset {name} needs --data DIR (the data set's root directory)")
    root = Path(root)
    if name == "imagenet":
        return ImageFolderDataset(root / split, name="imagenet")
    if name == "folder":
        return ImageFolderDataset(root / split if (root / split).is_dir() else root)
    if name in ("cifar10", "cifar100"):
        return CifarDataset(root, split, num_classes=int(name[len("cifar") :]))
    return FashionMnistDataset(root, split)


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
