"""Which images train, select and test a probe: the evaluated split and the held-out split.

BYOL v3, App. C.1: hyper-parameters are chosen on 10,009 images held out from ImageNet's training
set (the paper took "the last 10009 images of the official TensorFlow split"; training then has
1,271,158). Ours is a seeded, class-balanced draw of the same size, written to a file whose SHA-256
goes into the result record; 10% of every class on the other data sets. The readers themselves are
pretrain/data.py's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pretrain.checkpoint import write_atomic
from pretrain.data import DataError, ImageDataset, build_dataset, subset_indices

IMAGENET_HELDOUT = 10_009  # BYOL v3, App. C.1
HELDOUT_FRACTION = 0.1  # elsewhere (our choice, not in the paper)
EVAL_SPLIT = {  # the split results are reported on
    "imagenet": "val",  # BYOL v3, App. C.1: the public validation set
    "cifar10": "test",
    "cifar100": "test",
    "fmnist": "test",
    "synthetic": "test",
}


@dataclass(frozen=True)
class HeldoutSplit:
    """Indices into the training set: probes train on `train`, choose on `heldout`."""

    train: list[int]
    heldout: list[int]
    path: Path
    sha256: str

    @property
    def name(self) -> str:
        return f"heldout-{len(self.heldout)}"  # "heldout-10009" on ImageNet


def train_and_eval_sets(name: str, root: str | None) -> tuple[ImageDataset, ImageDataset, str]:
    """(training set, evaluated set, evaluated split name) for `--dataset name --data root`.

    A `folder` data set needs DIR/train and DIR/val (or DIR/test). The two sets must have the same
    classes in the same order, else the labels would mean different things.
    """
    split = EVAL_SPLIT.get(name)
    if name == "folder":
        found = [s for s in ("val", "test") if root is not None and (Path(root) / s).is_dir()]
        if root is None or not (Path(root) / "train").is_dir() or not found:
            raise DataError(
                f"--dataset folder needs --data DIR with DIR/train/<class>/ and DIR/val/<class>/ "
                f"(or DIR/test/<class>/); {root} has no such layout"
            )
        split = found[0]
    train_set = build_dataset(name, root, "train")
    eval_set = build_dataset(name, root, split)
    check_same_classes(train_set, eval_set, split)
    return train_set, eval_set, split


def check_same_classes(train_set: ImageDataset, eval_set: ImageDataset, split: str) -> None:
    """Raise DataError unless both sets have the same class names in the same order."""
    if train_set.classes != eval_set.classes:
        only_train = sorted(set(train_set.classes) - set(eval_set.classes))[:10]
        only_eval = sorted(set(eval_set.classes) - set(train_set.classes))[:10]
        raise DataError(
            f"the {split} split has {eval_set.num_classes} classes, train has "
            f"{train_set.num_classes} (only in train: {only_train}; only in {split}: "
            f"{only_eval}); both need the same class directories"
        )


def data_fingerprint(images: ImageDataset) -> str:
    """SHA-256 over a set's name, classes, labels and file paths (or subset indices), so that two
    different directories given as the same `--dataset` never share a cache entry or split file.
    Pixel contents are not hashed."""
    digest = hashlib.sha256(json.dumps([images.name, images.classes, len(images)]).encode())
    digest.update(np.asarray(images.targets, dtype=np.int64).tobytes())
    for path in getattr(images, "paths", []):
        digest.update(str(path).encode() + b"\0")
    if hasattr(images, "indices"):  # a SubsetDataset: its parent and the chosen indices
        digest.update(np.asarray(images.indices, dtype=np.int64).tobytes())
        digest.update(data_fingerprint(images.dataset).encode())
    return digest.hexdigest()


def balanced_indices(targets: list[int], total: int, seed: int) -> list[int]:
    """Sorted indices of `total` images spread evenly over the classes (seeded): every class gives
    total // K images, and total % K classes drawn at random give one more."""
    targets_array = np.asarray(targets)
    classes = np.unique(targets_array)
    rng = np.random.default_rng(seed)
    extra = set(rng.permutation(classes)[: total % len(classes)].tolist())
    chosen = []
    for label in classes:
        members = np.flatnonzero(targets_array == label)
        take = total // len(classes) + (label in extra)
        if take >= len(members):
            raise DataError(
                f"class {label} has {len(members)} training images; holding out {take} would "
                "leave none to train on"
            )
        chosen.append(rng.permutation(members)[:take])
    return sorted(np.concatenate(chosen).tolist())


def heldout_split(train_set: ImageDataset, *, seed: int, out_dir: str | Path) -> HeldoutSplit:
    """The held-out split of `train_set`, written to `out_dir` (one line per image: index, class,
    file), deterministic in (data, seed). ImageNet: 10,009 images; else 10% of each class."""
    if train_set.name == "imagenet":
        heldout = balanced_indices(train_set.targets, IMAGENET_HELDOUT, seed)
    else:
        heldout = subset_indices(train_set.targets, fraction=HELDOUT_FRACTION, seed=seed)
    held = set(heldout)
    train = [index for index in range(len(train_set)) if index not in held]
    fingerprint = data_fingerprint(train_set)
    root = getattr(train_set, "root", None)
    lines = [
        f"# held-out split of {train_set.name} train ({len(heldout)} of {len(train_set)} images), "
        f"seed {seed}, data {fingerprint[:16]}; columns: index, class, file",
    ]
    for index in heldout:
        path = train_set.paths[index].relative_to(root) if root is not None else ""
        lines.append(f"{index}\t{train_set.classes[train_set.targets[index]]}\t{path}")
    payload = ("\n".join(lines) + "\n").encode()
    path = Path(out_dir) / f"heldout-{train_set.name}-{fingerprint[:12]}-seed{seed}.txt"
    write_atomic(path, payload)
    return HeldoutSplit(train, heldout, path, hashlib.sha256(payload).hexdigest())
