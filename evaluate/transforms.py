"""The two image pipelines of linear evaluation (sample order: pretrain/sampling.py).

BYOL v3, App. C.1: train the linear classifier on random crops resized to 224 with random flips
(no colour augmentation); test on the shorter side resized to 256 (bicubic), centre crop 224;
normalise with the data set's mean and standard deviation. The ops are pretrain/augment.py's
(`augment_view`, `eval_view`), so evaluation decodes and resizes exactly as pretraining does.

DEVIATION(small-images): for images of 64 px or less (CIFAR, Fashion-MNIST, synthetic) the test
view is a plain resize to the input size (no 256/224 centre crop, which would cut an eighth of a
32 px image away) and training crops cover at least 20% of the area, as pretrain/augment.py's
small-image views do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from pretrain.augment import ViewDistribution, augment_view, normalize
from pretrain.data import ImageDataset
from pretrain.sampling import (
    sample_seed,
)
from pretrain.views import EvalView

SMALL_IMAGE_MAX = 64  # px; at or below this the small-image variant applies
SMALL_DATASETS = ("cifar10", "cifar100", "fmnist", "synthetic")  # default input size 32, else 224


def default_image_size(dataset: str) -> int:
    """The input size when neither the checkpoint nor --image-size gives one."""
    return 32 if dataset in SMALL_DATASETS else 224  # BYOL v3, App. C.1: 224 on ImageNet


@dataclass(frozen=True)
class Preprocessing:
    """Input size and normalisation an encoder expects (from its export's metadata when known)."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # the test view's shorter side / crop when a protocol states its own (transfer classification's
    # logistic regression: resize to 224, crop 224, i.e. 1.0); None: resize_ratio's default
    test_resize_ratio: float | None = None

    @property
    def small(self) -> bool:
        return self.image_size <= SMALL_IMAGE_MAX

    @property
    def resize_ratio(self) -> float:
        """Shorter side / crop: 256 / 224 (BYOL v3, App. C.1); 1.0 for small images."""
        if self.test_resize_ratio is not None:
            return self.test_resize_ratio
        return 1.0 if self.small else 256 / 224

    @property
    def eval_id(self) -> str:
        """Names the test view in feature-cache keys and records."""
        mean, std = ",".join(f"{m:.4f}" for m in self.mean), ",".join(f"{s:.4f}" for s in self.std)
        return (
            f"centercrop/1:size={self.image_size},ratio={self.resize_ratio:.4f},"
            f"mean={mean},std={std}"
        )

    def eval_dataset(self, images: ImageDataset) -> EvalView:
        """(normalised centre view [3, S, S], label) per image, in order."""
        return EvalView(images, self.image_size, self.mean, self.std, self.resize_ratio)

    def train_view(self) -> ViewDistribution:
        """Random resized crop + horizontal flip, nothing else (BYOL v3, App. C.1)."""
        return ViewDistribution(
            crop_scale=(0.2, 1.0) if self.small else (0.08, 1.0),  # DEVIATION(small-images)
            jitter_prob=0.0,
            grayscale_prob=0.0,
            blur_prob=0.0,
            solarize_prob=0.0,
        )


class ProbeTrainView(Dataset):
    """Training input of the probe, keyed by (epoch, index): one augmented, normalised view.

    Each sample's crop and flip are drawn from `sample_seed(seed, epoch, index)`, so a run's views
    do not depend on the number of loader workers (and separate runs with one seed see the same).
    """

    def __init__(self, images: ImageDataset, preprocessing: Preprocessing, seed: int) -> None:
        self.images, self.preprocessing, self.seed = images, preprocessing, seed
        self.view = preprocessing.train_view()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, index = key
        generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, index))
        image, label = self.images.load(index)
        view = augment_view(image, self.view, self.preprocessing.image_size, generator)
        return normalize(view, self.preprocessing.mean, self.preprocessing.std), label
