"""Which images train, select and test a probe: the evaluated split and the held-out split.

BYOL v3, App. C.1: hyper-parameters are chosen on 10,009 images held out from ImageNet's training
set (the paper took "the last 10009 images of the official TensorFlow split"; training then has
1,271,158). Ours is a seeded, class-balanced draw of the same size, written to a file whose SHA-256
goes into the result record; 10% of every class on the other data sets. The readers themselves are
pretrain/data.py's.

Semi-supervised fine-tuning (BYOL v3, App. C.1) trains on SimCLR's fixed 1% / 10% ImageNet subsets
(12,811 / 128,116 file names, one per line): `read_split_file` checks such a file against the
training folder. Other data sets get a seeded, class-balanced subset written in the same format
(`labelled_subset`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pretrain.data import DataError, ImageDataset, build_dataset, subset_indices
from results.atomic import write_atomic

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


def heldout_split(
    train_set: ImageDataset, *, seed: int, out_dir: str | Path, size: int | None = None
) -> HeldoutSplit:
    """The held-out split of `train_set`, written to `out_dir` (one line per image: index, class,
    file), deterministic in (data, seed). `size` images spread evenly over the classes
    (balanced_indices) when given; else ImageNet: 10,009 images; elsewhere 10% of each class."""
    if size is not None:
        heldout = balanced_indices(train_set.targets, size, seed)
    elif train_set.name == "imagenet":
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
    paths = getattr(train_set, "paths", None)
    for index in heldout:
        path = Path(paths[index]).relative_to(root) if root and paths is not None else ""
        lines.append(f"{index}\t{train_set.classes[train_set.targets[index]]}\t{path}")
    payload = ("\n".join(lines) + "\n").encode()
    sized = f"-n{size}" if size is not None else ""
    path = Path(out_dir) / f"heldout-{train_set.name}-{fingerprint[:12]}-seed{seed}{sized}.txt"
    write_atomic(path, payload)
    return HeldoutSplit(train, heldout, path, hashlib.sha256(payload).hexdigest())


# ---------------------------------------------------------------------------------------------
# Labelled subsets for semi-supervised fine-tuning (BYOL v3, App. C.1; SimCLR's subsets)

SEMISUP_FRACTIONS = (1, 10)  # percent of the training labels; BYOL v3, Table 2
SIMCLR_SUBSET_SIZES = {1: 12_811, 10: 128_116}  # lines of SimCLR's 1percent.txt / 10percent.txt
SIMCLR_SUBSETS_URL = "https://github.com/google-research/simclr/tree/master/imagenet_subsets"
_SHOW_NAMES = 10  # names listed per problem in an error message


@dataclass(frozen=True)
class LabelledSubset:
    """The training images whose labels a semi-supervised fine-tune may use."""

    indices: list[int]  # into the training set, sorted
    path: Path  # the split file: one training image name per line
    sha256: str  # of the split file's bytes
    source: str  # "split-file" (given with --split-file) or "seeded" (drawn here and written)


def image_names(train_set: ImageDataset) -> list[str]:
    """The name of every training image, as split files list them.

    ImageNet: the file name (`n01440764_10026.JPEG`, SimCLR's format; unique, since it carries the
    class id). Other folders: the path below the training root (`<class>/<file>`). In-memory sets
    (CIFAR, Fashion-MNIST, synthetic) have no files: `<data set>-train-<index, 6 digits>`.
    """
    paths = getattr(train_set, "paths", None)
    if paths is None:
        return [f"{train_set.name}-train-{index:06d}" for index in range(len(train_set))]
    if train_set.name == "imagenet":
        return [Path(path).name for path in paths]
    return [Path(path).relative_to(train_set.root).as_posix() for path in paths]


def subset_size(train_set: ImageDataset, fraction: int) -> int:
    """Images in a `fraction`% subset: SimCLR's counts on ImageNet, floor(N x fraction / 100)
    elsewhere (the same rule gives SimCLR's counts for ImageNet's 1,281,167 training images)."""
    if train_set.name == "imagenet":
        return SIMCLR_SUBSET_SIZES[fraction]
    return len(train_set) * fraction // 100


def read_split_file(path: str | Path, train_set: ImageDataset, fraction: int) -> list[int]:
    """Sorted training-set indices of the images a split file names, after checking it.

    The file lists one training image name per line (`image_names`; blank lines are ignored).
    Checked, each with a DataError naming the first offenders: no name twice; the names belong to
    this data set; the count is the fraction's (`subset_size`); every name is a training image;
    every class has at least one image.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split file {path} does not exist; pass --split-file FILE")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read split file {path} ({error})") from error
    names = [line.strip() for line in lines if line.strip()]
    seen, duplicates = set(), []
    for name in names:
        if name in seen and name not in duplicates:
            duplicates.append(name)
        seen.add(name)
    if duplicates:
        raise DataError(
            f"split file {path} lists {len(duplicates)} image(s) more than once (first: "
            f"{duplicates[:_SHOW_NAMES]}); a split file names each training image once"
        )
    index_of = {name: index for index, name in enumerate(image_names(train_set))}
    missing = [name for name in names if name not in index_of]
    where = getattr(train_set, "root", None) or f"the {train_set.name} training set"
    if names and len(missing) == len(names):
        raise DataError(
            f"none of the {len(names)} names in split file {path} is a training image of "
            f"{train_set.name} (first: {missing[:3]}; this data set's look like "
            f"{image_names(train_set)[:1]}): is it the split file of another data set?"
        )
    _check_count(path, len(names), train_set, fraction)
    if missing:
        raise DataError(
            f"{len(missing)} of the {len(names)} images in split file {path} are not under "
            f"{where} (first missing: {missing[:_SHOW_NAMES]}); check --data (the training "
            "folder must hold every listed image) or the split file"
        )
    indices = sorted(index_of[name] for name in names)
    covered = {train_set.targets[index] for index in indices}
    uncovered = [name for label, name in enumerate(train_set.classes) if label not in covered]
    if uncovered:
        raise DataError(
            f"split file {path} has no image of {len(uncovered)} class(es) (first: "
            f"{uncovered[:_SHOW_NAMES]}); a labelled subset must cover every class"
        )
    return indices


def _check_count(path: Path, count: int, train_set: ImageDataset, fraction: int) -> None:
    expected = subset_size(train_set, fraction)
    if count == expected:
        return
    others = [f"{f}%: {subset_size(train_set, f):,}" for f in SEMISUP_FRACTIONS if f != fraction]
    raise DataError(
        f"split file {path} names {count:,} images, but a {fraction}% subset of {train_set.name} "
        f"has {expected:,} (other fractions: {', '.join(others)}); pass the {fraction}% file "
        "or the matching --fraction"
    )


def seeded_subset_indices(
    train_set: ImageDataset, fraction: int, *, seed: int, exclude: Sequence[int] = ()
) -> list[int]:
    """A class-balanced `fraction`% subset (`subset_size` images, `balanced_indices`), drawn with
    `seed` from the training images not in `exclude` (the held-out split). Deterministic."""
    excluded = set(exclude)
    pool = [index for index in range(len(train_set)) if index not in excluded]
    chosen = balanced_indices(
        [train_set.targets[index] for index in pool], subset_size(train_set, fraction), seed
    )
    return sorted(pool[position] for position in chosen)


def labelled_subset(
    train_set: ImageDataset,
    fraction: int,
    *,
    seed: int,
    out_dir: str | Path,
    split_file: str | Path | None = None,
    exclude: Sequence[int] = (),
) -> LabelledSubset:
    """The `fraction`% labelled subset: read and checked from `split_file`, else (not ImageNet)
    drawn with `seed` outside `exclude` and written to `out_dir` in the same format, so that it
    can be shared and passed back as --split-file."""
    if fraction not in SEMISUP_FRACTIONS:
        raise DataError(f"the labelled fraction is 1 or 10 (percent), not {fraction}")
    if split_file is not None:
        indices = read_split_file(split_file, train_set, fraction)
        path, source = Path(split_file), "split-file"
    elif train_set.name == "imagenet":
        raise DataError(
            f"ImageNet needs --split-file: SimCLR's {fraction}percent.txt ({SIMCLR_SUBSETS_URL}); "
            "a subset of our own would make the numbers incomparable with the paper's"
        )
    else:
        indices = seeded_subset_indices(train_set, fraction, seed=seed, exclude=exclude)
        names = image_names(train_set)
        fingerprint = data_fingerprint(train_set)[:12]
        path = Path(out_dir) / f"subset-{train_set.name}-{fingerprint}-{fraction}pct-seed{seed}.txt"
        write_atomic(path, "".join(names[index] + "\n" for index in indices).encode())
        source = "seeded"
    return LabelledSubset(indices, path, hashlib.sha256(path.read_bytes()).hexdigest(), source)
