"""Which images fit, select and test a transfer classifier (BYOL v3, App. D.1 and Table 10).

Aircraft, VOC2007, DTD and Flowers have a validation split of their creators: hyper-parameters
are chosen on it. The others hold a validation set out of their training split, as many images
as Table 10 lists (Food-101 7,575 of 75,750; CIFAR-10 5,000 of 50,000; ...), spread evenly over
the classes and seeded (evaluate/splits.py:heldout_split, written as a split file whose SHA-256
goes into the record). On a release of another size (a subset, or Birdsnap with the images
Flickr no longer serves) the same fraction is held out. The chosen setting is then fitted again
on train + validation and reported on the test split, which nothing touches before.

DEVIATION(birdsnap-val): Table 10 says Birdsnap's validation set has "the same number per
category as the test split"; ours is Table 10's count (4,981) spread evenly over the classes.
CIFAR-100's 5,067 and Cars' 1,650 are not multiples of the class count: the remainder goes to
classes drawn at random (balanced_indices), as the paper's split was probably not stratified.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from evaluate.splits import heldout_split
from pretrain.data import ConcatImages, ImageDataset, SubsetDataset

# Table 10: (images in the creators' training split, of which held out for validation)
HELDOUT_OF_TRAIN = {
    "food101": (75_750, 7_575),
    "cifar10": (50_000, 5_000),
    "cifar100": (50_000, 5_067),
    "birdsnap": (47_386, 4_981),
    "sun397": (19_850, 3_970),  # Training_01: 50 per class, 10 held out
    "cars": (8_144, 1_650),
    "pets": (3_680, 740),  # 20 per class
    "caltech101": (3_060, 510),  # 30 drawn per class, 5 held out (DeCAF's 25 + 5)
}


@dataclass(frozen=True)
class SelectionSplits:
    """train (fit while choosing), val (choose on), test (report); train_val fits the final model.

    `train_indices` / `val_indices` index `source` (the creators' training split) when val was held
    out of it, else they are None and val is the creators' split."""

    train: ImageDataset
    val: ImageDataset
    test: ImageDataset
    val_source: str  # "creators-val" or "heldout-<N>"
    split_file: str | None
    split_sha256: str | None
    train_indices: list[int] | None = None
    val_indices: list[int] | None = None

    @property
    def train_val(self) -> ImageDataset:
        return ConcatImages([self.train, self.val])


def heldout_size(name: str, train_images: int) -> int:
    """Images held out of a training split of `train_images` images (Table 10's count on the full
    release, the same fraction of another size, at least one)."""
    full, held = HELDOUT_OF_TRAIN[name]
    return held if train_images == full else max(1, round(train_images * held / full))


def selection_splits(release, *, seed: int, out_dir: str | Path) -> SelectionSplits:
    """The splits of `release` (transfer/classification/releases.py:Release) for one protocol."""
    if release.val is not None:
        return SelectionSplits(release.train, release.val, release.test, "creators-val", None, None)
    size = heldout_size(release.name, len(release.train))
    split = heldout_split(release.train, seed=seed, out_dir=out_dir, size=size)
    return SelectionSplits(
        SubsetDataset(release.train, split.train),
        SubsetDataset(release.train, split.heldout),
        release.test,
        split.name,
        str(split.path),
        split.sha256,
        split.train,
        split.heldout,
    )
