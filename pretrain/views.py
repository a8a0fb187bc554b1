"""What the loaders hand to the networks: BYOL's two views of each image, or one evaluation view.

Two places can finish BYOL's views (BYOL v3, App. B, Table 6), chosen by `augment_on`:

- "loader" (the CPU path): each loader worker crops, resizes and applies the photometric ops to one
  image at a time (`TwoViews`), and the batch arrives as normalised float views.
- "device" (the GPU path): workers only decode, crop and resize to uint8 (`TwoCrops`, 1/4 of the
  bytes to copy) and draw each image's photometric parameters; `finish_on_device` then applies
  flip, colour jitter, grayscale, blur, solarize and normalisation to the whole batch on the device
  as batched tensor ops (`augment.apply_photometric`).

Both paths draw the same numbers in the same order from the generator seeded with
`sample_seed(seed, epoch, index)` (crop of view 1, its photometric parameters, crop of view 2, its
parameters), so they produce the same views up to float rounding, and exact resume holds either way.
Both implement both semantics of the ops (`ViewDistribution.ops`: "authors" or "torchvision").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from pretrain.augment import (
    PhotometricParams,
    ViewDistribution,
    apply_photometric,
    augment_view,
    crop_resize,
    draw_crop,
    draw_photometric,
    eval_view,
    normalize,
    semantics_of,
)
from pretrain.data import ImageDataset
from pretrain.sampling import SeededBatches, sample_seed

AUGMENT_ON = ("loader", "device")


class TwoViews(Dataset):
    """BYOL's input: two augmented views of one image, drawn from T and T' (Grill et al. 2020).

    Indexed by `(epoch, index)` keys from `SeededBatches` (pretrain/sampling.py). All randomness
    comes from one generator seeded with `sample_seed(seed, epoch, index)`, so a sample's views
    are the same in any worker, with any number of workers, before and after a resume.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        view_1: ViewDistribution,
        view_2: ViewDistribution,
        out_size: int,
        seed: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.dataset, self.view_1, self.view_2 = dataset, view_1, view_2
        self.out_size, self.seed, self.mean, self.std = out_size, seed, mean, std

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        epoch, index = key
        generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, index))
        image, label = self.dataset.load(index)
        view_1 = augment_view(image, self.view_1, self.out_size, generator)  # [3, out, out]
        view_2 = augment_view(image, self.view_2, self.out_size, generator)
        return normalize(view_1, self.mean, self.std), normalize(view_2, self.mean, self.std), label


class TwoCrops(Dataset):
    """The loader half of the device path: two uint8 crops and each one's photometric draws.

    Same keys, same generator and same draw order as `TwoViews`; returns
    (crop_1 uint8 [3, out, out], params_1, crop_2, params_2, label) where params are dicts of
    per-image tensors (PhotometricParams fields without the batch dimension) that the default
    collate stacks into batches.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        view_1: ViewDistribution,
        view_2: ViewDistribution,
        out_size: int,
        seed: int,
    ) -> None:
        self.dataset, self.view_1, self.view_2 = dataset, view_1, view_2
        self.out_size, self.seed = out_size, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, index))
        image, label = self.dataset.load(index)
        crop_1, params_1 = self._crop(image, self.view_1, generator)
        crop_2, params_2 = self._crop(image, self.view_2, generator)
        return crop_1, params_1, crop_2, params_2, label

    def _crop(self, image: torch.Tensor, dist: ViewDistribution, generator: torch.Generator):
        box = draw_crop((image.shape[-2], image.shape[-1]), dist, generator)
        antialias = semantics_of(dist.ops, "resize") == "torchvision"
        crop = crop_resize(image, box, self.out_size, antialias=antialias)
        params = draw_photometric(dist, 1, generator)  # after the crop, as in augment_view
        return crop, {f.name: getattr(params, f.name)[0] for f in dataclasses.fields(params)}


def finish_on_device(
    batch,
    device: torch.device,
    views: tuple[ViewDistribution, ViewDistribution],
    mean: Sequence[float],
    std: Sequence[float],
    memory_format: torch.memory_format = torch.contiguous_format,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A `TwoCrops` batch -> (view_1, view_2, labels) on `device`, photometric ops batched there.

    Copies are non-blocking (from pinned memory when the loader pins); nothing here synchronises
    with the host. Returns normalised float views [B, 3, out, out] in `memory_format`.
    """
    crops_1, params_1, crops_2, params_2, labels = batch
    finished = []
    for crops, params, dist in ((crops_1, params_1, views[0]), (crops_2, params_2, views[1])):
        images = crops.to(device, non_blocking=True).float().div_(255.0)
        on_device = PhotometricParams(
            **{name: value.to(device, non_blocking=True) for name, value in params.items()}
        )
        view = apply_photometric(images, on_device, dist.solarize_threshold, dist.ops)
        view = normalize(view, mean, std)
        finished.append(view.contiguous(memory_format=memory_format))
    return finished[0], finished[1], labels.to(device, non_blocking=True)


class EvalView(Dataset):
    """Evaluation input: resize to out_size x resize_ratio, centre crop out_size, normalise."""

    def __init__(
        self,
        dataset: ImageDataset,
        out_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        resize_ratio: float = 256 / 224,
    ) -> None:
        self.dataset, self.out_size, self.resize_ratio = dataset, out_size, resize_ratio
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.dataset.load(index)
        view = eval_view(image, self.out_size, self.resize_ratio)  # [3, out, out]
        return normalize(view, self.mean, self.std), label


def build_pretrain_loader(
    dataset: ImageDataset,
    *,
    view_1: ViewDistribution,
    view_2: ViewDistribution,
    out_size: int,
    batch_size: int,
    seed: int,
    rank: int,
    world_size: int,
    num_workers: int,
    mean: Sequence[float],
    std: Sequence[float],
    augment_on: str = "loader",
) -> tuple[DataLoader, SeededBatches]:
    """The pretraining loader (per-rank `batch_size`) and its sampler; call
    `sampler.set_epoch(epoch, start_step)` before iterating each epoch.

    augment_on="loader" yields finished views (`TwoViews`); "device" yields `TwoCrops` batches for
    `finish_on_device`. Pinned memory on CUDA machines, persistent workers, 4 batches prefetched per
    worker. No worker_init_fn: workers draw nothing from their own RNG state, since every sample's
    randomness is seeded from (seed, epoch, index).
    """
    if augment_on not in AUGMENT_ON:
        raise ValueError(f"augment_on must be one of {AUGMENT_ON}; got {augment_on!r}")
    sampler = SeededBatches(
        len(dataset), batch_size * world_size, seed, rank=rank, world_size=world_size, last="drop"
    )
    if augment_on == "device":
        views: Dataset = TwoCrops(dataset, view_1, view_2, out_size, seed)
    else:
        views = TwoViews(dataset, view_1, view_2, out_size, seed, mean, std)
    return training_loader(views, sampler, num_workers), sampler


def training_loader(dataset: Dataset, sampler: SeededBatches, num_workers: int) -> DataLoader:
    """The pretraining DataLoader of `dataset`'s batches of `sampler` (persistent workers).

    Its workers' base seed comes from its own generator, never from torch's global RNG (so does
    the probe's loader, `build_eval_loader`). The global RNG then serves only the training step (a
    ViT's drop-path) and is checkpointed (pretrain/state.py), so resuming mid-epoch, where a new
    loader iterator starts, replays the same draws: exact resume. The views do not use the base
    seed: each sample's draws come from sample_seed(seed, epoch, index).
    """
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
        generator=torch.Generator(),  # not the global RNG: exact resume
    )


def build_eval_loader(
    dataset: ImageDataset,
    *,
    out_size: int,
    batch_size: int,
    num_workers: int,
    mean: Sequence[float],
    std: Sequence[float],
    resize_ratio: float = 256 / 224,
) -> DataLoader:
    """A loader over all of `dataset` in order, with the evaluation view (no augmentation)."""
    return DataLoader(
        EvalView(dataset, out_size, mean, std, resize_ratio),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        generator=torch.Generator(),  # not the global RNG (see training_loader)
    )
