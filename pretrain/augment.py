"""BYOL's two view distributions T and T', and the ops that sample views from them.

BYOL v3, App. B, Table 6 (Grill et al. 2020, arXiv 2006.07733): random resized crop, horizontal
flip, colour jitter in a random order, grayscale, Gaussian blur and solarize, applied in the order
of the authors' code (deepmind-research/byol, utils/augmentations.py). Every image draws its own
parameters: a batch-shared draw is a known bug in a popular port.

The geometric half (`draw_crop`, `crop_resize`) runs per image on uint8 tensors in the data loader.
The photometric half is split into a draw (`draw_photometric`, from a CPU generator only) and a
batched apply (`apply_photometric`, plain tensor ops on CPU or CUDA), so that a GPU path can apply a
whole batch on the device. The ops themselves live in pretrain/image_ops.py.

Two semantics (`ViewDistribution.ops`, set from `PretrainConfig.augment_ops`): "authors" follows
deepmind-research/byol (utils/augmentations.py for the colour ops and the blur, utils/dataset.py
for the crop and the resize), the default for pretraining; "torchvision" follows
torchvision.transforms.v2 (RandomResizedCrop, antialiased resize, ColorJitter, GaussianBlur). Both
draw the same numbers in the same order from the generator, so the two differ only in the ops.
Each part (crop, resize, colour, blur) can take the other semantics alone, e.g.
"authors,colour=torchvision" (`config.augment_semantics`): one change at a time.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

from pretrain import image_ops as ops_lib
from pretrain.config import augment_semantics

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
    brightness: float = 0.4  # BYOL v3, Table 6; authors: delta U[-0.4, 0.4], tv: factor U[0.6, 1.4]
    contrast: float = 0.4  # BYOL v3, Table 6: factor uniform in [1 - 0.4, 1 + 0.4]
    saturation: float = 0.2  # BYOL v3, Table 6: factor uniform in [1 - 0.2, 1 + 0.2]
    hue: float = 0.1  # BYOL v3, Table 6: shift uniform in [-0.1, 0.1] of a full turn
    grayscale_prob: float = 0.2  # BYOL v3, Table 6
    blur_prob: float  # BYOL v3, Table 6: 1.0 in T, 0.1 in T'
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # BYOL v3, App. B: sigma uniform in [0.1, 2.0]
    solarize_prob: float  # BYOL v3, Table 6: 0.0 in T, 0.2 in T'
    solarize_threshold: float = 0.5  # BYOL v3, App. B: x -> 1 - x where x >= 0.5, on [0, 1]
    # "torchvision" here keeps the evaluation views (evaluate/transforms.py) as they were;
    # byol_views gives pretraining the authors' ops by default (PretrainConfig.augment_ops).
    ops: str = "torchvision"  # whose crop, resize, colour ops and blur padding (augment_ops)

    def __post_init__(self) -> None:
        probs = (self.flip_prob, self.jitter_prob, self.grayscale_prob)
        probs += (self.blur_prob, self.solarize_prob)
        if not all(0.0 <= p <= 1.0 for p in probs):
            raise ValueError(f"Augmentation probabilities must lie in [0, 1]; got {probs}.")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue must lie in [0, 0.5] (a fraction of a turn); got {self.hue}.")
        augment_semantics(self.ops)  # a ConfigError (a ValueError) names the valid words


def semantics_of(ops: str, part: str) -> str:
    """Whose op `ops` (an augment_ops value) uses for `part`: "authors" or "torchvision"."""
    return augment_semantics(ops)[part]


def byol_views(
    small_images: bool = False, ops: str = "authors"
) -> tuple[ViewDistribution, ViewDistribution]:
    """BYOL's (T, T'): they differ only in blur and solarize probability (BYOL v3, Table 6).

    ops: "authors" (default), "torchvision", or either with part overrides (module docstring).
    """
    view = ViewDistribution(blur_prob=1.0, solarize_prob=0.0, ops=ops)
    view_prime = ViewDistribution(blur_prob=0.1, solarize_prob=0.2, ops=ops)
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

    By `dist.ops`: the authors' one clipped draw (`draw_crop_authors`) or torchvision's
    rejection loop (`draw_crop_torchvision`); BYOL v3, App. B.
    """
    if semantics_of(dist.ops, "crop") == "authors":
        return draw_crop_authors(image_hw, dist, generator)
    return draw_crop_torchvision(image_hw, dist, generator)


def draw_crop_authors(
    image_hw: tuple[int, int], dist: ViewDistribution, generator: torch.Generator
) -> tuple[int, int, int, int]:
    """The authors' crop (deepmind-research/byol, utils/dataset.py, _decode_and_random_crop).

    One draw: area ~ U(crop_scale) x image area, log ratio ~ U(log crop_ratio),
    w = round(sqrt(area x ratio)), h = round(sqrt(area / ratio)), each clipped to the image (so a
    crop wider than the image becomes a full-width band); then left ~ U{0..W - w}, top ~ U{0..H - h}
    (drawn in that order).
    """
    height, width = image_hw
    area = height * width
    log_ratio = torch.log(torch.tensor(dist.crop_ratio))  # float32, as the authors' TF code
    scale = torch.empty(1).uniform_(*dist.crop_scale, generator=generator).item()
    log_aspect = torch.empty(1).uniform_(*log_ratio.tolist(), generator=generator)
    aspect = torch.exp(log_aspect).item()
    crop_w = min(max(1, int(round(math.sqrt(area * scale * aspect)))), width)
    crop_h = min(max(1, int(round(math.sqrt(area * scale / aspect)))), height)
    left = int(torch.randint(0, width - crop_w + 1, (1,), generator=generator))
    top = int(torch.randint(0, height - crop_h + 1, (1,), generator=generator))
    return top, left, crop_h, crop_w


def draw_crop_torchvision(
    image_hw: tuple[int, int], dist: ViewDistribution, generator: torch.Generator
) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params, draw for draw, from `generator`: up to ten tries
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


def _resize_uint8(
    image: torch.Tensor, size: tuple[int, int], antialias: bool = True
) -> torch.Tensor:
    """Bicubic resize of a uint8 [C, h, w] image to uint8 [3, *size].

    antialias=True: torchvision's (PIL's) antialiased resize. antialias=False: the authors'
    (tf.image.resize BICUBIC, no antialiasing), computed in float, clipped and rounded to uint8.
    """
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(
            f"Expected a uint8 [1 or 3, H, W] image; got {image.dtype} {tuple(image.shape)}."
        )
    resized = image.unsqueeze(0)  # [1, C, h, w]
    bicubic = dict(mode="bicubic", align_corners=False, antialias=antialias)
    if tuple(image.shape[-2:]) != size and image.device.type == "cpu" and antialias:
        # torch's native uint8 kernel (PIL's fixed-point resampling), what torchvision uses on CPU
        resized = F.interpolate(resized, size, **bicubic)
    elif tuple(image.shape[-2:]) != size:
        resized = F.interpolate(resized.float(), size, **bicubic)
        resized = resized.clamp_(0, 255).round_().to(torch.uint8)  # bicubic overshoots [0, 255]
    return resized[0].expand(3, -1, -1).contiguous()


def crop_resize(
    image: torch.Tensor, crop: tuple[int, int, int, int], out_size: int, antialias: bool = True
) -> torch.Tensor:
    """Cut `crop` (top, left, height, width) out of a uint8 [C, H, W] image; uint8 [3, out, out].

    BYOL v3, App. B: bicubic resize to 224 (here out_size); antialiased as torchvision, or not as
    the authors' code (antialias=False); 1 channel is replicated.
    """
    top, left, height, width = crop
    cut = image[:, top : top + height, left : left + width]
    # DEVIATION(resize-kernel): torch's bicubic uses a = -0.75 (TF's, the authors', a = -0.5), and
    # the crop is rounded to uint8 (the authors keep float) so the device path copies 1/4 the bytes.
    return _resize_uint8(cut, (out_size, out_size), antialias)


@dataclass
class PhotometricParams:
    """Per-image photometric draws for B images; every tensor has B rows.

    The jitter factors are drawn for every image and used only where `jitter` is True, so the
    number of draws, hence the generator's stream, does not depend on the coin flips.
    """

    flip: torch.Tensor  # [B] bool
    jitter: torch.Tensor  # [B] bool
    order: torch.Tensor  # [B, 4] int64, each row a permutation of the JITTER_OPS ids 0..3
    brightness: torch.Tensor  # [B] float: authors an added delta, torchvision a factor
    contrast: torch.Tensor  # [B] float, contrast factor (about channel means or the mean grey)
    saturation: torch.Tensor  # [B] float, saturation factor (S in HSV, or blend with grey)
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

    Ranges by `dist.ops`: authors (utils/augmentations.py) brightness delta U[-b, b], contrast
    and saturation U[1 - s, 1 + s]; torchvision's ColorJitter factors U[max(0, 1 - s), 1 + s].
    Hue U[-hue, hue] in both. Same draws, same order either way.
    """

    def coin(prob: float) -> torch.Tensor:
        return torch.rand(batch_size, generator=generator) < prob

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.empty(batch_size).uniform_(low, high, generator=generator)

    flip, jitter = coin(dist.flip_prob), coin(dist.jitter_prob)
    order = torch.rand(batch_size, 4, generator=generator).argsort(dim=1)  # uniform permutations
    authors = semantics_of(dist.ops, "colour") == "authors"
    low = (lambda s: 1 - s) if authors else (lambda s: max(0.0, 1 - s))
    brightness_low = -dist.brightness if authors else max(0.0, 1 - dist.brightness)
    brightness_high = dist.brightness if authors else 1 + dist.brightness
    brightness = uniform(brightness_low, brightness_high)
    contrast = uniform(low(dist.contrast), 1 + dist.contrast)
    saturation = uniform(low(dist.saturation), 1 + dist.saturation)
    hue = uniform(-dist.hue, dist.hue)
    grayscale, blur = coin(dist.grayscale_prob), coin(dist.blur_prob)
    sigma = uniform(*dist.blur_sigma)
    solarize = coin(dist.solarize_prob)
    blur_sigma = torch.where(blur, sigma, torch.zeros_like(sigma))
    return PhotometricParams(
        flip, jitter, order, brightness, contrast, saturation, hue, grayscale, blur_sigma, solarize
    )


def _where(
    mask: torch.Tensor,
    images: torch.Tensor,
    op: Callable[..., torch.Tensor],
    *per_image_args: torch.Tensor,
) -> torch.Tensor:
    """op(images, *per_image_args) for the images where mask [B] is True, unchanged elsewhere.

    Every op is per image (its result for one image depends on that image and its own arguments
    only), so on CPU it runs on the selected rows alone: a jitter op selected for ~1/5 of a batch
    costs ~1/5. On a device the op runs on the whole batch and torch.where selects: finding the
    rows would synchronise with the host.
    """
    if images.device.type != "cpu":
        return torch.where(ops_lib.per_image(mask), op(images, *per_image_args), images)
    rows = mask.nonzero().squeeze(1)
    if len(rows) == 0:
        return images
    if len(rows) == len(mask):
        return op(images, *per_image_args)
    out = images.clone()
    out[rows] = op(images[rows], *(values[rows] for values in per_image_args))
    return out


def apply_photometric(
    images: torch.Tensor,
    params: PhotometricParams,
    solarize_threshold: float = 0.5,
    ops: str = "torchvision",
) -> torch.Tensor:
    """Apply each image's own flip, colour jitter, grayscale, blur and solarize; batched.

    images: float [B, 3, H, W] in [0, 1], square (the blur kernel scales with H); params on the same
    device; ops: "authors" or "torchvision" (pretrain/image_ops.py). Order as in the authors' code:
    flip, jitter (its four ops in each image's own order, each clipping to [0, 1]), grayscale,
    blur, solarize (BYOL v3, App. B). Returns float [B, 3, H, W] in [0, 1].
    """
    authors = semantics_of(ops, "colour") == "authors"
    x = _where(params.flip, images, lambda batch: batch.flip(-1))
    jitter_ops = (  # (op, its per-image argument), in the JITTER_OPS order of `params.order`
        (ops_lib.brightness_add if authors else ops_lib.brightness_scale, params.brightness),
        (ops_lib.contrast_per_channel if authors else ops_lib.contrast_luma, params.contrast),
        (ops_lib.saturation_hsv if authors else ops_lib.saturation_luma, params.saturation),
        (ops_lib.hue_shift, params.hue),
    )
    for position in range(4):
        for op_id, (op, argument) in enumerate(jitter_ops):
            x = _where(params.jitter & (params.order[:, position] == op_id), x, op, argument)
    x = _where(params.grayscale, x, lambda batch: ops_lib.luma(batch).expand(-1, 3, -1, -1))
    blur = params.blur_sigma > 0
    sigma = torch.where(blur, params.blur_sigma, torch.ones_like(params.blur_sigma))  # no 0/0
    blur_op = partial(
        ops_lib.gaussian_blur,
        kernel_size=blur_kernel_size(x.shape[-2]),
        padding="zeros" if semantics_of(ops, "blur") == "authors" else "reflect",
    )
    x = _where(blur, x, blur_op, sigma)
    return _where(params.solarize, x, partial(ops_lib.solarize, threshold=solarize_threshold))


def augment_view(
    image: torch.Tensor, dist: ViewDistribution, out_size: int, generator: torch.Generator
) -> torch.Tensor:
    """One view of a uint8 [C, H, W] image drawn from `dist`: float [3, out, out] in [0, 1].

    The CPU path of the data loader: draw_crop, crop_resize, then the photometric ops with B = 1.
    """
    crop = draw_crop((image.shape[-2], image.shape[-1]), dist, generator)
    view = crop_resize(
        image, crop, out_size, antialias=semantics_of(dist.ops, "resize") == "torchvision"
    )
    view = view.float().div_(255.0).unsqueeze(0)  # [1, 3, out, out]
    params = draw_photometric(dist, 1, generator)
    return apply_photometric(view, params, dist.solarize_threshold, dist.ops)[0]


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
