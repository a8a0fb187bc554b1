"""The photometric ops of BYOL's views, batched with one parameter per image, in two semantics.

Images are float [B, 3, H, W] in [0, 1]; parameters are [B] tensors. Two semantics
(`config.AUGMENT_SEMANTICS`, chosen by `PretrainConfig.augment_ops`, part by part):

- "authors": deepmind-research/byol, utils/augmentations.py (the code behind BYOL v3, App. B):
  brightness adds a delta, contrast scales each channel about its own mean, saturation scales S
  in HSV and clips it, hue shifts H in HSV; every jitter op clips to [0, 1]; the blur pads with
  zeros (its conv's 'SAME' padding).
- "torchvision": torchvision.transforms.v2.functional's ops: brightness multiplies, contrast and
  saturation blend with the (mean) luma, hue as above; the blur pads by reflection.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def per_image(values: torch.Tensor) -> torch.Tensor:
    """[B] -> [B, 1, 1, 1], broadcasting one value per image over [B, C, H, W]."""
    return values.view(-1, 1, 1, 1)


def luma(images: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, [B, 1, H, W]: the grayscale of torchvision and of the authors' code."""
    red, green, blue = images.unbind(dim=1)
    return (0.2989 * red + 0.587 * green + 0.114 * blue).unsqueeze(1)


def _blend(images: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    ratio = per_image(ratio)
    return (images * ratio + other * (1.0 - ratio)).clamp(0.0, 1.0)


def brightness_scale(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision: x * factor, clipped."""
    return (images * per_image(factor)).clamp(0.0, 1.0)


def brightness_add(images: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Authors (adjust_brightness, then the jitter's clip): x + delta, clipped."""
    return (images + per_image(delta)).clamp(0.0, 1.0)


def contrast_luma(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision: blend with the image's mean luma (one grey for all channels), clipped."""
    return _blend(images, luma(images).mean(dim=(1, 2, 3), keepdim=True), factor)


def contrast_per_channel(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Authors (adjust_contrast): factor (x_c - mean_c) + mean_c per channel c, clipped."""
    mean = images.mean(dim=(2, 3), keepdim=True)  # [B, 3, 1, 1]
    return (per_image(factor) * (images - mean) + mean).clamp(0.0, 1.0)


def saturation_luma(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision: blend with the luma image, clipped."""
    return _blend(images, luma(images), factor)


def rgb_to_hsv(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(hue in turns, saturation, value), each [B, H, W]; torchvision's conversion."""
    red, green, _ = images.unbind(dim=1)
    max_c, min_c = images.amax(dim=1), images.amin(dim=1)  # [B, H, W]
    grey = max_c == min_c  # H and S are 0 there; the where()s only avoid dividing by 0
    ones = torch.ones_like(max_c)
    sat = (max_c - min_c) / torch.where(grey, ones, max_c)
    span = torch.where(grey, ones, max_c - min_c).unsqueeze(1)
    rc, gc, bc = ((max_c.unsqueeze(1) - images) / span).unbind(dim=1)
    h_red = (bc - gc) * (max_c == red)
    h_green = (rc + 2.0 - bc) * ((max_c == green) & (max_c != red))
    h_blue = (gc + 4.0 - rc) * ((max_c != green) & (max_c != red))
    hue = ((h_red + h_green + h_blue) * (1.0 / 6.0) + 1.0).fmod(1.0)
    return hue, sat, max_c


def hsv_to_rgb(hue: torch.Tensor, sat: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] from [B, H, W] hue (turns), saturation and value; torchvision's conversion."""
    h6 = hue * 6.0
    sector = torch.floor(h6)
    frac = h6 - sector
    p = ((1.0 - sat) * value).clamp(0.0, 1.0)
    q = ((1.0 - sat * frac) * value).clamp(0.0, 1.0)
    t = ((sat * frac + 1.0 - sat) * value).clamp(0.0, 1.0)
    vpqt = torch.stack((value, p, q, t), dim=1)  # [B, 4, H, W]
    # each channel picks among (v, p, q, t) by the sector of the hue circle
    select = torch.tensor([[0, 2, 1, 1, 3, 0], [3, 0, 0, 2, 1, 1], [1, 1, 3, 0, 0, 2]])
    select = select.to(value.device)[:, sector.long().remainder(6)]  # [3, B, H, W]
    return vpqt.gather(1, select.transpose(0, 1))


def saturation_hsv(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Authors (adjust_saturation): S -> clip(S x factor, 0, 1) in HSV, then back to RGB."""
    hue, sat, value = rgb_to_hsv(images)
    sat = (sat * factor.view(-1, 1, 1)).clamp(0.0, 1.0)
    return hsv_to_rgb(hue, sat, value).clamp(0.0, 1.0)


def hue_shift(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """H -> (H + shift) mod 1 in HSV (torchvision's adjust_hue; the authors' adjust_hue too)."""
    hue, sat, value = rgb_to_hsv(images)
    return hsv_to_rgb((hue + shift.view(-1, 1, 1)).remainder(1.0), sat, value)


def gaussian_blur(
    images: torch.Tensor, sigma: torch.Tensor, kernel_size: int, padding: str = "reflect"
) -> torch.Tensor:
    """Separable Gaussian blur, one sigma per image; kernel exp(-x^2 / 2 sigma^2), x integer.

    padding "reflect" is torchvision's gaussian_blur, "zeros" the authors' ('SAME' conv).
    """
    batch, channels, height, width = images.shape
    lim = (kernel_size - 1) / (2.0 * math.sqrt(2.0))
    grid = torch.linspace(-lim, lim, kernel_size, dtype=images.dtype, device=images.device)
    kernel = (grid / sigma.view(-1, 1)).pow(2).neg().softmax(dim=1)  # [B, k]
    kernel = kernel.repeat_interleave(channels, dim=0)  # [B*C, k]: one group per image channel
    pad = kernel_size // 2
    mode = "reflect" if padding == "reflect" else "constant"
    padded = F.pad(images, (pad, pad, pad, pad), mode=mode)
    padded = padded.reshape(1, batch * channels, height + 2 * pad, width + 2 * pad)
    rows = F.conv2d(padded, kernel.view(-1, 1, 1, kernel_size), groups=batch * channels)
    blurred = F.conv2d(rows, kernel.view(-1, 1, kernel_size, 1), groups=batch * channels)
    return blurred.view(batch, channels, height, width)


def solarize(images: torch.Tensor, threshold: float) -> torch.Tensor:
    """x -> 1 - x where x >= threshold (both semantics)."""
    return torch.where(images >= threshold, 1.0 - images, images)
