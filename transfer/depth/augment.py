"""NYU depth views: BYOL v3 App. D.6's training augmentation and the matching test view.

Both views downsample the 640x480 frame by `scale` (0.5) and take the centre crop of `crop`
(228x304, H x W): BYOL v3, App. D.6 trains on "the original NYU Depth v2 frames of size
[640,480]", downsampled by 0.5 and centre-cropped to 304x228. The image is resized bilinearly
with antialiasing; the depth by nearest neighbour, because averaging depths across an object's
edge invents a depth on neither surface and averaging in the 0s of unmeasured pixels corrupts
their valid neighbours: every target stays a measured value and 0 stays "invalid".

Training adds, in this order, each from one torch.Generator seeded per sample (the same seed gives
the same view, so resumed runs see the same data): horizontal flip (p 0.5, image and depth),
brightness + U(-0.1255, 0.1255), saturation x U(0.5, 1.5), hue + U(-0.2, 0.2) turns, then
grayscale with p 0.3. These are D.6's values, which are TF-slim inception_preprocessing's
distort_color (32/255 brightness, its saturation and hue), so the ops use the authors' TensorFlow
semantics from pretrain/image_ops.py: brightness adds, saturation scales S in HSV and clips, hue
shifts H, each result clipped to [0, 1]; the order (slim's first ordering, grayscale last as in
BYOL's own views) is ours: D.6 does not give one.

The test view has no randomness. Its ground truth is the depth at full resolution cut to the
crop's footprint (`footprint`): the region of the original frame the input covers (for 480x640:
rows 12..467, columns 16..623), so a prediction upsampled to that size is scored pixel for pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pretrain import image_ops
from pretrain.augment import IMAGENET_MEAN, IMAGENET_STD, normalize


@dataclass(frozen=True)
class DepthAugmentation:
    """BYOL v3, App. D.6's NYU training transform (the test view uses scale and crop only)."""

    scale: float = 0.5  # D.6: frames downsampled by a factor 0.5
    crop: tuple[int, int] = (228, 304)  # (H, W); D.6: centre crop to 304x228 (W x H)
    flip: bool = True  # D.6: random horizontal flip
    grayscale_p: float = 0.3  # D.6: random grayscale, probability 0.3
    brightness: float = 0.1255  # D.6: maximum brightness delta (added, images in [0, 1])
    saturation: tuple[float, float] = (0.5, 1.5)  # D.6: saturation factor range
    hue: tuple[float, float] = (-0.2, 0.2)  # D.6: hue delta range, in turns
    mean: tuple[float, float, float] = IMAGENET_MEAN  # the engine passes the checkpoint's
    std: tuple[float, float, float] = IMAGENET_STD


def downsample(image: torch.Tensor, depth: torch.Tensor, scale: float):
    """(float image [3, h, w] in 0..255, depth [h, w]) at round(H x scale) x round(W x scale):
    bilinear + antialias for the image, nearest for the depth (see the module docstring)."""
    height, width = image.shape[-2:]
    size = (round(height * scale), round(width * scale))
    image = image.float()
    if size == (height, width):
        return image, depth
    image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True)[0]
    depth = F.interpolate(depth[None, None], size=size, mode="nearest")[0, 0]
    return image, depth


def crop_corner(height: int, width: int, crop: tuple[int, int]) -> tuple[int, int]:
    """(top, left) of the centre crop of `crop` (H, W) in a height x width map."""
    if height < crop[0] or width < crop[1]:
        raise ValueError(
            f"a {height}x{width} (downsampled) frame is smaller than the {crop[0]}x{crop[1]} crop"
        )
    return (height - crop[0]) // 2, (width - crop[1]) // 2


def footprint(height: int, width: int, aug: DepthAugmentation) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) at the original resolution of the region the crop covers
    (exact when the downsampled size and the crop corner map to whole pixels, as for 480x640)."""
    small = (round(height * aug.scale), round(width * aug.scale))
    top, left = crop_corner(*small, aug.crop)
    rows, cols = height / small[0], width / small[1]
    return (
        round(top * rows),
        round(left * cols),
        round((top + aug.crop[0]) * rows),
        round((left + aug.crop[1]) * cols),
    )


def _centre_crop(image: torch.Tensor, depth: torch.Tensor, crop: tuple[int, int]):
    top, left = crop_corner(*image.shape[-2:], crop)
    rows, cols = slice(top, top + crop[0]), slice(left, left + crop[1])
    return image[:, rows, cols], depth[rows, cols]


def _jitter(image: torch.Tensor, aug: DepthAugmentation, draws: torch.Tensor) -> torch.Tensor:
    """Brightness, saturation, hue, then grayscale on a [3, h, w] image in [0, 1]."""
    batch = image[None]  # image_ops work on [B, 3, H, W] with one parameter per image
    delta = aug.brightness * (2 * draws[2:3] - 1)
    batch = image_ops.brightness_add(batch, delta)
    low, high = aug.saturation
    batch = image_ops.saturation_hsv(batch, low + (high - low) * draws[3:4])
    low, high = aug.hue
    batch = image_ops.hue_shift(batch, low + (high - low) * draws[4:5])
    if draws[1] < aug.grayscale_p:
        batch = image_ops.luma(batch).expand(-1, 3, -1, -1)
    return batch[0]


def train_view(image: torch.Tensor, depth: torch.Tensor, aug: DepthAugmentation, seed: int):
    """(normalised float image [3, h, w], depth [h, w]) of one seeded draw; (h, w) = aug.crop.

    The generator draws five numbers in a fixed order (flip, grayscale, brightness,
    saturation, hue) whatever the settings, so a seed gives the same view in every run."""
    draws = torch.rand(5, generator=torch.Generator().manual_seed(seed))
    image, depth = _centre_crop(*downsample(image, depth, aug.scale), aug.crop)
    if aug.flip and draws[0] < 0.5:
        image, depth = image.flip(-1), depth.flip(-1)
    image = _jitter(image / 255.0, aug, draws)
    return normalize(image, aug.mean, aug.std).contiguous(), depth.contiguous()


def eval_view(image: torch.Tensor, depth: torch.Tensor, aug: DepthAugmentation):
    """(normalised input [3, h, w], depth at full resolution inside the input's footprint)."""
    small_image, _ = _centre_crop(*downsample(image, depth, aug.scale), aug.crop)
    top, left, bottom, right = footprint(*image.shape[-2:], aug)
    truth = depth[top:bottom, left:right]
    return normalize(small_image / 255.0, aug.mean, aug.std).contiguous(), truth.contiguous()
