"""Joint image/label transforms for segmentation training and testing.

Training (BYOL v3, App. D.4 for VOC; mmseg's _base_/datasets/ade20k.py for ADE20K), in mmseg's
order: random rescale by a factor in `scale_range` of a base size; a random crop of at most
`crop` px (with `cat_max_ratio` < 1, up to 10 draws until no class covers that share of the
crop's labelled pixels: mmseg's RandomCrop); horizontal flip 0.5; optionally mmseg's
PhotoMetricDistortion; normalise; pad to `crop` with the mean colour and IGNORE labels.
Every random number comes from one torch.Generator seeded per sample, so a draw depends only on
(run seed, sample position): resumed runs see the same views.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pretrain.augment import normalize

IGNORE = 255  # label value that neither trains nor counts in mIoU
CROP_TRIES = 10  # mmseg RandomCrop: draws before keeping a crop above cat_max_ratio


@dataclass(frozen=True)
class Augmentation:
    """The training transform's settings (see the module docstring)."""

    crop: int
    scale_range: tuple[float, float]
    base_size: tuple[int, int] | None  # (long, short) side targets; None: the image's own size
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    cat_max_ratio: float = 1.0  # 1.0: any crop
    photometric: bool = False  # mmseg's PhotoMetricDistortion


def base_factor(height: int, width: int, base_size: tuple[int, int] | None) -> float:
    """mmseg's keep-ratio Resize: the factor that fits (long, short) into base_size; else 1."""
    if base_size is None:
        return 1.0
    long_side, short_side = base_size
    return min(long_side / max(height, width), short_side / min(height, width))


def rescale(image: torch.Tensor, label: torch.Tensor | None, factor: float):
    """Bilinear image (float), nearest label, both by `factor` (None label passes through)."""
    height, width = image.shape[-2:]
    size = (max(1, round(height * factor)), max(1, round(width * factor)))
    if size == (height, width):
        return image.float(), label
    image = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    if label is not None:
        label = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return image, label


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _coin(generator: torch.Generator) -> bool:
    return bool(torch.rand((), generator=generator) < 0.5)


def crop_window(label: torch.Tensor, crop: int, cat_max_ratio: float, generator):
    """(top, left) of a crop of at most crop x crop px, re-drawn as mmseg's RandomCrop does."""
    height, width = label.shape
    for _ in range(CROP_TRIES):
        top = int(torch.randint(0, max(height - crop, 0) + 1, (), generator=generator))
        left = int(torch.randint(0, max(width - crop, 0) + 1, (), generator=generator))
        if cat_max_ratio >= 1.0:
            break
        window = label[top : top + crop, left : left + crop]
        counts = torch.bincount(window[window != IGNORE].flatten())
        counts = counts[counts > 0]
        if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
            break
    return top, left


def photometric_distortion(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """mmseg's PhotoMetricDistortion on an RGB image [3, H, W] in 0..255 (returns uint8 values).

    Each with probability 0.5: brightness + U(-32, 32); contrast x U(0.5, 1.5) (before or after
    the next two, a coin decides); saturation x U(0.5, 1.5) and hue + U(-18, 18) degrees/2 in
    HSV; values clipped to 0..255 after each step, as mmseg's uint8 arithmetic.
    """
    image = image.round().clamp(0, 255)
    if _coin(generator):
        image = (image + _uniform(generator, -32, 32)).clamp(0, 255).floor()
    contrast_first = _coin(generator)
    if contrast_first and _coin(generator):
        image = (image * _uniform(generator, 0.5, 1.5)).clamp(0, 255).floor()
    saturate, saturation = _coin(generator), _uniform(generator, 0.5, 1.5)
    shift, hue = _coin(generator), int(torch.randint(-18, 19, (), generator=generator))
    if saturate or shift:
        rgb = image.permute(1, 2, 0).to(torch.uint8).numpy()
        hsv = np.asarray(Image.fromarray(rgb).convert("HSV")).astype(np.float64)
        if saturate:
            hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 255)
        if shift:  # PIL's hue is 0..255 for 0..360 degrees; cv2's (mmseg's) 0..180
            hsv[..., 0] = (hsv[..., 0] + hue * 256 / 180) % 256
        rgb = np.asarray(Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB"))
        image = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float()
    if not contrast_first and _coin(generator):
        image = (image * _uniform(generator, 0.5, 1.5)).clamp(0, 255).floor()
    return image


def train_view(image: torch.Tensor, label: torch.Tensor, aug: Augmentation, seed: int):
    """(normalised float image [3, crop, crop], label [crop, crop]) of one seeded draw."""
    generator = torch.Generator().manual_seed(seed)
    low, high = aug.scale_range
    factor = base_factor(*image.shape[-2:], aug.base_size) * _uniform(generator, low, high)
    image, label = rescale(image, label, factor)
    top, left = crop_window(label, aug.crop, aug.cat_max_ratio, generator)
    image = image[:, top : top + aug.crop, left : left + aug.crop]
    label = label[top : top + aug.crop, left : left + aug.crop]
    if _coin(generator):
        image, label = image.flip(-1), label.flip(-1)
    if aug.photometric:
        image = photometric_distortion(image, generator)
    image = normalize(image / 255.0, aug.mean, aug.std)  # padding below is the mean colour (0)
    pad_h, pad_w = aug.crop - image.shape[1], aug.crop - image.shape[2]
    image = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)
    label = F.pad(label, (0, pad_w, 0, pad_h), value=IGNORE)
    return image.contiguous(), label.contiguous()


def eval_view(image: torch.Tensor, aug: Augmentation) -> torch.Tensor:
    """The normalised test input: rescaled to the base size (ADE20K) or as it is (VOC)."""
    image, _ = rescale(image, None, base_factor(*image.shape[-2:], aug.base_size))
    return normalize(image / 255.0, aug.mean, aug.std)


def centre_crop(image: torch.Tensor, label: torch.Tensor, crop: int):
    """BYOL v3, App. D.4: a centre crop at test (VOC's <= 500 px images pass whole at 513)."""
    height, width = image.shape[-2:]
    top, left = max((height - crop) // 2, 0), max((width - crop) // 2, 0)
    window = (slice(top, top + crop), slice(left, left + crop))
    return image[(..., *window)], label[window]
