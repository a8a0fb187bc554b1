"""DINO's multi-crop views: 2 global and N local crops of each image, as the authors make them.

Protocol: Caron et al. 2021 (DINO, Sec. 3.1: two global views at 224^2 covering a large area of
the image and several local views at 96^2 covering small areas), and the code behind it,
facebookresearch/dino main_dino.py `DataAugmentationDINO` with utils.py `GaussianBlur` and
`Solarization`:
    global crop 1: RandomResizedCrop(global_size, global_scale, bicubic), flip 0.5,
                   ColorJitter(0.4, 0.4, 0.2, 0.1) with p 0.8 (its four ops in a random order),
                   grayscale 0.2, PIL Gaussian blur p 1.0 (radius U(0.1, 2.0)), normalise;
    global crop 2: the same with blur p 0.1, then PIL solarize (threshold 128) p 0.2;
    local crops:   RandomResizedCrop(local_size, local_scale, bicubic), flip, jitter and
                   grayscale as above, blur p 0.5.
SelfPatch (alinlab/SelfPatch main_selfpatch.py) uses the same code with other scales.

The ops are the authors' own: torchvision.transforms.functional on PIL images and PIL's blur and
solarize. Only the randomness differs: every number is drawn from one torch.Generator seeded with
`sample_seed(seed, epoch, index)` (pretrain/sampling.py), crop by crop in a fixed order (global 1,
global 2, the locals; per crop its box, then its photometric parameters), with the same draw
functions and ranges as BYOL's torchvision-semantics views (pretrain/augment.py
`draw_crop_torchvision`, `draw_photometric`). So a sample's crops are the same in any loader
worker, with any number of workers, before and after a resume. BYOL's `augment_ops` does not apply
here: multi-crop always has DINO's (torchvision's) semantics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageFilter, ImageOps
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import InterpolationMode

from pretrain.augment import (
    JITTER_OPS,
    PhotometricParams,
    ViewDistribution,
    draw_crop_torchvision,
    draw_photometric,
    normalize,
)
from pretrain.config import ConfigError, PretrainConfig
from pretrain.data import ImageDataset
from pretrain.sampling import SeededBatches, sample_seed
from pretrain.views import training_loader

Box = tuple[int, int, int, int]  # (top, left, height, width) in the source image


@dataclass(frozen=True, kw_only=True)
class MultiCropSpec:
    """The multi-crop views of one image; defaults are DINO's (main_dino.py, utils.py)."""

    global_number: int = 2  # DINO: always 2 global crops, with different blur/solarize (above)
    global_size: int = 224  # DINO DataAugmentationDINO: RandomResizedCrop(224)
    global_scale: tuple[float, float] = (0.4, 1.0)  # DINO --global_crops_scale; SelfPatch 0.25
    local_number: int = 8  # DINO --local_crops_number
    local_size: int = 96  # DINO DataAugmentationDINO: RandomResizedCrop(96)
    local_scale: tuple[float, float] = (0.05, 0.4)  # DINO --local_crops_scale; SelfPatch (., 0.25)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # torchvision RandomResizedCrop default
    flip_prob: float = 0.5  # DINO: RandomHorizontalFlip(p=0.5)
    jitter_prob: float = 0.8  # DINO: RandomApply([ColorJitter(...)], p=0.8)
    brightness: float = 0.4  # DINO: ColorJitter(brightness=0.4): factor U[0.6, 1.4]
    contrast: float = 0.4  # DINO: ColorJitter(contrast=0.4): factor U[0.6, 1.4]
    saturation: float = 0.2  # DINO: ColorJitter(saturation=0.2): factor U[0.8, 1.2]
    hue: float = 0.1  # DINO: ColorJitter(hue=0.1): shift U[-0.1, 0.1] of a turn
    grayscale_prob: float = 0.2  # DINO: RandomGrayscale(p=0.2)
    blur_probs: tuple[float, float, float] = (1.0, 0.1, 0.5)  # DINO GaussianBlur: g1, g2, local
    blur_radius: tuple[float, float] = (0.1, 2.0)  # DINO utils.GaussianBlur radius_min/max
    solarize_probs: tuple[float, float, float] = (0.0, 0.2, 0.0)  # DINO Solarization: g2 only
    solarize_threshold: int = 128  # PIL ImageOps.solarize default, as DINO calls it

    def __post_init__(self) -> None:
        if self.global_number != 2:
            raise ConfigError(
                f"multi-crop takes exactly 2 global crops (DINO's two global views, the "
                f"teacher's inputs, each with its own blur and solarize); got {self.global_number}"
            )
        if self.local_number < 0 or min(self.global_size, self.local_size) < 1:
            raise ConfigError(
                f"multi-crop needs crop sizes of at least 1 px and 0 or more local crops; got "
                f"global {self.global_size} px, {self.local_number} local crops of "
                f"{self.local_size} px"
            )
        if self.local_size > self.global_size:
            raise ConfigError(
                f"local crops ({self.local_size} px) must not be larger than the global crops "
                f"({self.global_size} px); lower --local-crop-size or raise --image-size"
            )
        probs = (self.flip_prob, self.jitter_prob, self.grayscale_prob)
        probs += (*self.blur_probs, *self.solarize_probs)
        if len(self.blur_probs) != 3 or len(self.solarize_probs) != 3:
            raise ConfigError(
                "blur_probs and solarize_probs take 3 values each: global 1, global 2, local"
            )
        if not all(0.0 <= p <= 1.0 for p in probs) or not 0.0 <= self.hue <= 0.5:
            raise ConfigError(
                f"multi-crop probabilities must lie in [0, 1] and hue in [0, 0.5]; got {probs}, "
                f"hue {self.hue}"
            )
        for name in ("global_scale", "local_scale"):
            low, high = getattr(self, name)
            if not 0.0 < low <= high <= 1.0:
                raise ConfigError(
                    f"multi-crop {name} must satisfy 0 < min <= max <= 1 (area fractions of "
                    f"the image); got ({low}, {high})"
                )

    @property
    def num_crops(self) -> int:
        """Crops per image: the 2 global ones, then the local ones."""
        return self.global_number + self.local_number

    def crop_plan(self) -> list[tuple[ViewDistribution, int]]:
        """(distribution, output size) of each crop in order: global 1, global 2, the locals."""
        plan = []
        for crop in range(self.num_crops):
            is_global = crop < self.global_number
            kind = crop if is_global else 2  # index into blur_probs / solarize_probs
            distribution = ViewDistribution(
                crop_scale=self.global_scale if is_global else self.local_scale,
                crop_ratio=self.crop_ratio,
                flip_prob=self.flip_prob,
                jitter_prob=self.jitter_prob,
                brightness=self.brightness,
                contrast=self.contrast,
                saturation=self.saturation,
                hue=self.hue,
                grayscale_prob=self.grayscale_prob,
                blur_prob=self.blur_probs[kind],
                blur_sigma=self.blur_radius,
                solarize_prob=self.solarize_probs[kind],
                ops="torchvision",  # ColorJitter's factor ranges in draw_photometric
            )
            plan.append((distribution, self.global_size if is_global else self.local_size))
        return plan


def multicrop_spec(config: PretrainConfig) -> MultiCropSpec:
    """The multi-crop views of a DINO/SelfPatch run: global crops of `image_size`, the config's
    local crops and scales, DINO's photometric settings. A bad combination is a ConfigError."""
    return MultiCropSpec(
        global_size=config.image_size,
        global_scale=(config.global_crop_scale_min, 1.0),
        local_number=config.local_crops,
        local_size=config.local_crop_size,
        local_scale=(config.local_crop_scale_min, config.local_crop_scale_max),
    )


def draw_crops(
    spec: MultiCropSpec, image_hw: tuple[int, int], generator: torch.Generator
) -> list[tuple[Box, PhotometricParams]]:
    """Every crop's box and photometric parameters (B = 1), drawn from `generator` in order.

    Per crop: torchvision's RandomResizedCrop draw, then flip, jitter coin, jitter order and
    factors, grayscale, blur coin and radius, solarize coin (pretrain/augment.py). The jitter
    factors and the radius are drawn whether or not they are used, so the stream is fixed.
    """
    return [
        (draw_crop_torchvision(image_hw, dist, generator), draw_photometric(dist, 1, generator))
        for dist, _ in spec.crop_plan()
    ]


def render_crop(
    picture: Image.Image, box: Box, params: PhotometricParams, size: int, solarize_threshold: int
) -> Image.Image:
    """One crop of an RGB PIL image with drawn parameters, by DINO's ops in DINO's order:
    resized crop (bicubic), flip, colour jitter (its ops in the drawn order), grayscale
    (3 channels), PIL Gaussian blur, PIL solarize. Returns an RGB PIL image of size x size."""
    crop = TF.resized_crop(picture, *box, [size, size], interpolation=InterpolationMode.BICUBIC)
    if params.flip[0]:
        crop = TF.hflip(crop)
    if params.jitter[0]:
        adjust = {
            "brightness": TF.adjust_brightness,
            "contrast": TF.adjust_contrast,
            "saturation": TF.adjust_saturation,
            "hue": TF.adjust_hue,
        }
        for op_id in params.order[0].tolist():  # torchvision ColorJitter's fn_idx
            name = JITTER_OPS[op_id]
            crop = adjust[name](crop, getattr(params, name)[0].item())
    if params.grayscale[0]:
        crop = TF.rgb_to_grayscale(crop, num_output_channels=3)
    if params.blur_sigma[0] > 0:
        crop = crop.filter(ImageFilter.GaussianBlur(radius=params.blur_sigma[0].item()))
    if params.solarize[0]:
        crop = ImageOps.solarize(crop, threshold=solarize_threshold)
    return crop


def to_picture(image: torch.Tensor) -> Image.Image:
    """A uint8 [C, H, W] image (C = 1 or 3) as an RGB PIL image; one channel is replicated,
    as BYOL's views replicate gray data (pretrain/augment.py crop_resize)."""
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(
            f"Expected a uint8 [1 or 3, H, W] image; got {image.dtype} {tuple(image.shape)}."
        )
    return TF.to_pil_image(image.expand(3, -1, -1).contiguous())


class MultiCrop(Dataset):
    """DINO's input: 2 global and `spec.local_number` local crops of one image (module docstring).

    Indexed by `(epoch, index)` keys from `SeededBatches`; all randomness comes from one generator
    seeded with `sample_seed(seed, epoch, index)`. Returns (crops, label): a list of 2 +
    local_number normalised float tensors, [3, global_size, global_size] then [3, local_size,
    local_size].
    """

    def __init__(
        self,
        dataset: ImageDataset,
        spec: MultiCropSpec,
        seed: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.dataset, self.spec, self.seed, self.mean, self.std = dataset, spec, seed, mean, std

    def __len__(self) -> int:
        return len(self.dataset)

    def draws(
        self, key: tuple[int, int], image_hw: tuple[int, int]
    ) -> list[tuple[Box, PhotometricParams]]:
        """The boxes and parameters of sample `key` (an image of size image_hw), as drawn."""
        epoch, index = key
        generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, index))
        return draw_crops(self.spec, image_hw, generator)

    def __getitem__(self, key: tuple[int, int]) -> tuple[list[torch.Tensor], int]:
        image, label = self.dataset.load(key[1])
        picture = to_picture(image)
        crops = []
        sizes = [size for _, size in self.spec.crop_plan()]
        for (box, params), size in zip(self.draws(key, tuple(image.shape[-2:])), sizes):
            crop = render_crop(picture, box, params, size, self.spec.solarize_threshold)
            crops.append(normalize(TF.to_tensor(crop), self.mean, self.std))  # [3, size, size]
        return crops, label


def build_multicrop_loader(
    dataset: ImageDataset,
    spec: MultiCropSpec,
    *,
    batch_size: int,
    seed: int,
    rank: int,
    world_size: int,
    num_workers: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> tuple[DataLoader, SeededBatches]:
    """The multi-crop pretraining loader (per-rank `batch_size`) and its sampler; call
    `sampler.set_epoch(epoch, start_step)` before iterating each epoch.

    Batches are (list of 2 + local_number tensors [B, 3, S, S], labels [B]). Same sampler, rank
    split and worker settings as BYOL's loader (pretrain/views.py build_pretrain_loader): global
    batches of batch_size x world_size, rank r takes the r-th slice, the incomplete last batch is
    dropped; pinned memory on CUDA machines, persistent workers, 4 batches prefetched per worker,
    no worker_init_fn (every draw is seeded from (seed, epoch, index)).
    """
    sampler = SeededBatches(
        len(dataset), batch_size * world_size, seed, rank=rank, world_size=world_size, last="drop"
    )
    return training_loader(MultiCrop(dataset, spec, seed, mean, std), sampler, num_workers), sampler
