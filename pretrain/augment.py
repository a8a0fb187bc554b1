"""BYOL's two view distributions T and T', and the ops that sample views from them.

BYOL v3, App. B, Table 6 (Grill et al. 2020, arXiv 2006.07733): random resized crop, horizontal
flip, colour jitter in a random order, grayscale, Gaussian blur and solarize, applied in the order
of the authors' code (deepmind-research/byol, utils/augmentations.py). Every image draws its own
parameters: a batch-shared draw is a known bug in a popular port.

The geometric half (`draw_crop`, `crop_resize`) runs per image on uint8 tensors in the data loader.
The photometric half is split into a draw (`draw_photometric`, from a CPU generator only) and a
batched apply (`apply_photometric`, plain tensor ops on CPU or CUDA), so that a GPU path can apply a
whole batch on the device. Each photometric op matches torchvision.transforms.v2.functional's.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet statistics; BYOL v3, App. C.1
IMAGENET_STD = (0.229, 0.224, 0.225)
JITTER_OPS = ("brightness", "contrast", "saturation", "hue")  # the ids in PhotometricParams.order


@dataclass(frozen=True, kw_only=True)
class ViewDistribution:
    """One of BYOL's two augmentation distributions, T or T' (BYOL v3, App. B, Table 6)."""

    crop_scale: tuple[float, float] = (0.08, 1.0)  # BYOL v3, App. B: area fraction, uniform
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # BYOL v3, App. B: aspect ratio, log-uniform
    flip_prob: float = 0.5  # BYOL v3, Table 6
    jitter_prob: float = 0.8  # BYOL v3, Table 6
    brightness: float = 0.4  # BYOL v3, Table 6: factor uniform in [1 - 0.4, 1 + 0.4]
    contrast: float = 0.4  # BYOL v3, Table 6: factor uniform in [1 - 0.4, 1 + 0.4]
    saturation: float = 0.2  # BYOL v3, Table 6: factor uniform in [1 - 0.2, 1 + 0.2]
    hue: float = 0.1  # BYOL v3, Table 6: shift uniform in [-0.1, 0.1] of a full turn
    grayscale_prob: float = 0.2  # BYOL v3, Table 6
    blur_prob: float  # BYOL v3, Table 6: 1.0 in T, 0.1 in T'
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # BYOL v3, App. B: sigma uniform in [0.1, 2.0]
    solarize_prob: float  # BYOL v3, Table 6: 0.0 in T, 0.2 in T'
    solarize_threshold: float = 0.5  # BYOL v3, App. B: x -> 1 - x where x >= 0.5, on [0, 1]

    def __post_init__(self) -> None:
        probs = (self.flip_prob, self.jitter_prob, self.grayscale_prob)
        probs += (self.blur_prob, self.solarize_prob)
        if not all(0.0 <= p <= 1.0 for p in probs):
            raise ValueError(f"Augmentation probabilities must lie in [0, 1]; got {probs}.")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue must lie in [0, 0.5] (a fraction of a turn); got {self.hue}.")


def byol_views(small_images: bool = False) -> tuple[ViewDistribution, ViewDistribution]:
    """BYOL's (T, T'): they differ only in blur and solarize probability (BYOL v3, Table 6)."""
    view = ViewDistribution(blur_prob=1.0, solarize_prob=0.0)
    view_prime = ViewDistribution(blur_prob=0.1, solarize_prob=0.2)
    if small_images:
        # DEVIATION(small-images): for 28-32 px data (CIFAR-size) common practice, not in the paper,
        # drops the blur in both views (at that size it erases most of the content) and crops at
        # least 20% of the area (8% of a 32 px image is a 9 px patch).
        view = dataclasses.replace(view, blur_prob=0.0, crop_scale=(0.2, 1.0))
        view_prime = dataclasses.replace(view_prime, blur_prob=0.0, crop_scale=(0.2, 1.0))
    return view, view_prime


def blur_kernel_size(image_size: int) -> int:
    """Blur kernel side for `image_size` px: the odd integer nearest 23 x size / 224, at least 3.

    BYOL v3, App. B: 23x23 at 224 px; scaled so the kernel covers the same fraction of the image.
    """
    scaled = 23 * image_size / 224
    return max(3, 2 * math.floor((scaled - 1) / 2 + 0.5) + 1)


def draw_crop(
    image_hw: tuple[int, int], dist: ViewDistribution, generator: torch.Generator
) -> tuple[int, int, int, int]:
    """Draw one random-resized-crop box (top, left, height, width) for an image of size image_hw.

    torchvision's RandomResizedCrop.get_params, draw for draw, but from `generator`: up to ten tries
    of area ~ U(crop_scale) x image area and log ratio ~ U(log crop_ratio); if none fits, the centre
    crop of the whole image with its ratio clamped into crop_ratio (BYOL v3, App. B).
    """
    height, width = image_hw
    area = height * width
    log_ratio = torch.log(torch.tensor(dist.crop_ratio))  # float32, as torchvision computes it
    for _ in range(10):
        scale = torch.empty(1).uniform_(*dist.crop_scale, generator=generator).item()
        log_aspect = torch.empty(1).uniform_(
            float(log_ratio[0]), float(log_ratio[1]), generator=generator
        )
        aspect = torch.exp(log_aspect).item()
        crop_w = int(round(math.sqrt(area * scale * aspect)))
        crop_h = int(round(math.sqrt(area * scale / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(torch.randint(0, height - crop_h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - crop_w + 1, (1,), generator=generator))
            return top, left, crop_h, crop_w
    in_ratio = width / height
    crop_h, crop_w = height, width
    if in_ratio < min(dist.crop_ratio):
        crop_h = int(round(width / min(dist.crop_ratio)))
    elif in_ratio > max(dist.crop_ratio):
        crop_w = int(round(height * max(dist.crop_ratio)))
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def _resize_uint8(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic antialiased resize of a uint8 [C, h, w] image to uint8 [3, *size], as torchvision."""
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(
            f"Expected a uint8 [1 or 3, H, W] image; got {image.dtype} {tuple(image.shape)}."
        )
    resized = image.unsqueeze(0)  # [1, C, h, w]
    bicubic = dict(mode="bicubic", align_corners=False, antialias=True)
    if tuple(image.shape[-2:]) != size and image.device.type == "cpu":
        # torch's native uint8 kernel (PIL's fixed-point resampling), what torchvision uses on CPU
        resized = F.interpolate(resized, size, **bicubic)
    elif tuple(image.shape[-2:]) != size:
        resized = F.interpolate(resized.float(), size, **bicubic)
        resized = resized.clamp_(0, 255).round_().to(torch.uint8)  # bicubic overshoots [0, 255]
    return resized[0].expand(3, -1, -1).contiguous()


def crop_resize(
    image: torch.Tensor, crop: tuple[int, int, int, int], out_size: int
) -> torch.Tensor:
    """Cut `crop` (top, left, height, width) out of a uint8 [C, H, W] image; uint8 [3, out, out].

    BYOL v3, App. B: bicubic resize to 224 (here out_size), antialiased; 1 channel is replicated.
    """
    top, left, height, width = crop
    return _resize_uint8(image[:, top : top + height, left : left + width], (out_size, out_size))


@dataclass
class PhotometricParams:
    """Per-image photometric draws for B images; every tensor has B rows.

    The jitter factors are drawn for every image and used only where `jitter` is True, so the
    number of draws, hence the generator's stream, does not depend on the coin flips.
    """

    flip: torch.Tensor  # [B] bool
    jitter: torch.Tensor  # [B] bool
    order: torch.Tensor  # [B, 4] int64, each row a permutation of the JITTER_OPS ids 0..3
    brightness: torch.Tensor  # [B] float, multiplicative factor
    contrast: torch.Tensor  # [B] float, blend factor towards the image's mean grey
    saturation: torch.Tensor  # [B] float, blend factor towards the image's grey version
    hue: torch.Tensor  # [B] float, shift in turns
    grayscale: torch.Tensor  # [B] bool
    blur_sigma: torch.Tensor  # [B] float, 0 = no blur
    solarize: torch.Tensor  # [B] bool

    def __len__(self) -> int:
        return self.flip.shape[0]

    def to(self, device: torch.device | str) -> PhotometricParams:
        """The same parameters on `device`."""
        fields = dataclasses.fields(self)
        return PhotometricParams(**{f.name: getattr(self, f.name).to(device) for f in fields})

    @classmethod
    def cat(cls, params: Sequence[PhotometricParams]) -> PhotometricParams:
        """Concatenate the draws of several images (or batches) into one batch, in order."""
        fields = dataclasses.fields(cls)
        return cls(**{f.name: torch.cat([getattr(p, f.name) for p in params]) for f in fields})


def draw_photometric(
    dist: ViewDistribution, batch_size: int, generator: torch.Generator
) -> PhotometricParams:
    """Draw each of `batch_size` images' own photometric parameters, from `generator` only.

    Factor ranges follow torchvision's ColorJitter: [max(0, 1 - s), 1 + s] and [-hue, hue].
    """

    def coin(prob: float) -> torch.Tensor:
        return torch.rand(batch_size, generator=generator) < prob

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.empty(batch_size).uniform_(low, high, generator=generator)

    flip, jitter = coin(dist.flip_prob), coin(dist.jitter_prob)
    order = torch.rand(batch_size, 4, generator=generator).argsort(dim=1)  # uniform permutations
    brightness = uniform(max(0.0, 1 - dist.brightness), 1 + dist.brightness)
    contrast = uniform(max(0.0, 1 - dist.contrast), 1 + dist.contrast)
    saturation = uniform(max(0.0, 1 - dist.saturation), 1 + dist.saturation)
    hue = uniform(-dist.hue, dist.hue)
    grayscale, blur = coin(dist.grayscale_prob), coin(dist.blur_prob)
    sigma = uniform(*dist.blur_sigma)
    solarize = coin(dist.solarize_prob)
    blur_sigma = torch.where(blur, sigma, torch.zeros_like(sigma))
    return PhotometricParams(
        flip, jitter, order, brightness, contrast, saturation, hue, grayscale, blur_sigma, solarize
    )


def _per_image(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)  # [B] -> [B, 1, 1, 1], broadcasts over [B, C, H, W]


def _luma(images: torch.Tensor) -> torch.Tensor:
    red, green, blue = images.unbind(dim=1)
    return (0.2989 * red + 0.587 * green + 0.114 * blue).unsqueeze(1)  # [B, 1, H, W]


def _blend(images: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    ratio = _per_image(ratio)
    return (images * ratio + other * (1.0 - ratio)).clamp(0.0, 1.0)


def _brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (images * _per_image(factor)).clamp(0.0, 1.0)


def _contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(images, _luma(images).mean(dim=(1, 2, 3), keepdim=True), factor)


def _saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(images, _luma(images), factor)


def _hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """torchvision's adjust_hue (RGB -> HSV, shift H, -> RGB), with one shift per image."""
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
    h = ((h_red + h_green + h_blue) * (1.0 / 6.0) + 1.0).fmod(1.0)
    h = (h + shift.view(-1, 1, 1)).remainder(1.0)
    # HSV -> RGB: pick each channel among (v, p, q, t) by the sector i of the hue circle.
    h6 = h * 6.0
    sector = torch.floor(h6)
    frac = h6 - sector
    p = ((1.0 - sat) * max_c).clamp(0.0, 1.0)
    q = ((1.0 - sat * frac) * max_c).clamp(0.0, 1.0)
    t = ((sat * frac + 1.0 - sat) * max_c).clamp(0.0, 1.0)
    vpqt = torch.stack((max_c, p, q, t), dim=1)  # [B, 4, H, W]
    select = torch.tensor([[0, 2, 1, 1, 3, 0], [3, 0, 0, 2, 1, 1], [1, 1, 3, 0, 0, 2]])
    select = select.to(images.device)[:, sector.long().remainder(6)]  # [3, B, H, W]
    return vpqt.gather(1, select.transpose(0, 1))


def _gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """torchvision's gaussian_blur (its kernel, reflect padding), one sigma per image, separable."""
    batch, channels, height, width = images.shape
    lim = (kernel_size - 1) / (2.0 * math.sqrt(2.0))
    grid = torch.linspace(-lim, lim, kernel_size, dtype=images.dtype, device=images.device)
    kernel = (grid / sigma.view(-1, 1)).pow(2).neg().softmax(dim=1)  # [B, k]
    kernel = kernel.repeat_interleave(channels, dim=0)  # [B*C, k]: one group per image channel
    pad = kernel_size // 2
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    padded = padded.reshape(1, batch * channels, height + 2 * pad, width + 2 * pad)
    rows = F.conv2d(padded, kernel.view(-1, 1, 1, kernel_size), groups=batch * channels)
    blurred = F.conv2d(rows, kernel.view(-1, 1, kernel_size, 1), groups=batch * channels)
    return blurred.view(batch, channels, height, width)


def _solarize(images: torch.Tensor, threshold: float) -> torch.Tensor:
    return torch.where(images >= threshold, 1.0 - images, images)


def _where(
    mask: torch.Tensor, images: torch.Tensor, op: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """op(images) for the images where mask [B] is True, the images unchanged elsewhere."""
    # On CPU (the loader calls with B = 1) skip ops nobody needs; on a device, checking would sync.
    if images.device.type == "cpu" and not bool(mask.any()):
        return images
    return torch.where(_per_image(mask), op(images), images)


def apply_photometric(
    images: torch.Tensor, params: PhotometricParams, solarize_threshold: float = 0.5
) -> torch.Tensor:
    """Apply each image's own flip, colour jitter, grayscale, blur and solarize; batched.

    images: float [B, 3, H, W] in [0, 1], square (the blur kernel scales with H); params on the same
    device. Order as in the authors' code: flip, jitter (its four ops in each image's own order),
    grayscale, blur, solarize (BYOL v3, App. B). Returns float [B, 3, H, W] in [0, 1].
    """
    x = _where(params.flip, images, lambda batch: batch.flip(-1))
    jitter_ops = (
        partial(_brightness, factor=params.brightness),
        partial(_contrast, factor=params.contrast),
        partial(_saturation, factor=params.saturation),
        partial(_hue, shift=params.hue),
    )
    for position in range(4):
        for op_id, op in enumerate(jitter_ops):
            x = _where(params.jitter & (params.order[:, position] == op_id), x, op)
    x = _where(params.grayscale, x, lambda batch: _luma(batch).expand(-1, 3, -1, -1))
    blur = params.blur_sigma > 0
    sigma = torch.where(blur, params.blur_sigma, torch.ones_like(params.blur_sigma))  # no 0/0
    kernel_size = blur_kernel_size(x.shape[-2])
    x = _where(blur, x, partial(_gaussian_blur, sigma=sigma, kernel_size=kernel_size))
    return _where(params.solarize, x, partial(_solarize, threshold=solarize_threshold))


def augment_view(
    image: torch.Tensor, dist: ViewDistribution, out_size: int, generator: torch.Generator
) -> torch.Tensor:
    """One view of a uint8 [C, H, W] image drawn from `dist`: float [3, out, out] in [0, 1].

    The CPU path of the data loader: draw_crop, crop_resize, then the photometric ops with B = 1.
    """
    crop = draw_crop((image.shape[-2], image.shape[-1]), dist, generator)
    view = crop_resize(image, crop, out_size).float().div_(255.0).unsqueeze(0)  # [1, 3, out, out]
    params = draw_photometric(dist, 1, generator)
    return apply_photometric(view, params, dist.solarize_threshold)[0]


def eval_view(image: torch.Tensor, out_size: int, resize_ratio: float = 256 / 224) -> torch.Tensor:
    """The evaluation view of a uint8 [C, H, W] image: float [3, out, out] in [0, 1].

    BYOL v3, App. C.1: resize the shorter side to 256 (bicubic), centre crop 224; here the shorter
    side goes to round(out_size x resize_ratio). resize_ratio=1.0 gives resize + centre crop.
    """
    if resize_ratio < 1.0:
        raise ValueError(f"resize_ratio must be >= 1 so the centre crop fits; got {resize_ratio}.")
    height, width = image.shape[-2:]
    short = round(out_size * resize_ratio)
    if height <= width:  # torchvision's rule: the longer side truncates
        size = (short, int(short * width / height))
    else:
        size = (int(short * height / width), short)
    resized = _resize_uint8(image, size)
    top, left = int(round((size[0] - out_size) / 2.0)), int(round((size[1] - out_size) / 2.0))
    return resized[:, top : top + out_size, left : left + out_size].float().div_(255.0)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x - mean) / std per channel, for [3, H, W] or [B, 3, H, W]."""
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - mean_t) / std_t
