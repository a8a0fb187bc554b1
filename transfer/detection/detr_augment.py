"""The DETR / Sparse R-CNN training augmentation of SelfPatch's Mask R-CNN config, on tensors.

alinlab/SelfPatch detection/configs/selfpatch/mask_rcnn_vit_small_12_p16_1x_coco.py (after
RandomFlip p 0.5, which train.FlipView applies first) runs mmdet's AutoAugment with two policies,
one drawn with p 1/2 each:

    1. Resize img_scale [(s, 1333) for s in 480, 512, ..., 800], multiscale_mode "value"
    2. Resize (s, 1333), s in {400, 500, 600} -> RandomCrop crop_type "absolute_range"
       crop_size (384, 600), allow_negative_crop -> Resize as 1. (override=True)

as mmdet 2.x implements them (mmdet/datasets/pipelines/transforms.py): a keep-ratio Resize scales
by min(long / max(h, w), short / min(h, w)) to int(side x scale + 0.5) (mmcv rescale_size), the
image bilinear, masks nearest, boxes by the realised new_w / w, new_h / h, then clipped to the
image. RandomCrop draws crop_h from [min(h, 384), min(h, 600)] and crop_w likewise (inclusive),
then the offset uniformly in [0, h - crop_h] x [0, w - crop_w]; boxes shift and are clipped to the
crop, boxes left without area are dropped with their labels and masks, and an image may be left
with no box (allow_negative_crop). Each draw comes from the item's seeded generator (train.py:
sample_seed(seed, position, index)), so a resumed run reads the same images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

CROP_SHORT_SIDES = (400, 500, 600)  # policy 2's first Resize
CROP_RANGE = (384, 600)  # RandomCrop crop_size, absolute_range
PER_BOX = ("boxes", "labels", "masks", "difficult")  # target entries with one row per box


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """Uniform integer in [low, high) (numpy's randint convention, as mmdet draws)."""
    return int(torch.randint(low, high, (), generator=generator))


def rescaled_size(height: int, width: int, short: int, long: int) -> tuple[int, int]:
    """(h, w) of a keep-ratio resize to at most `short` x `long` (mmcv rescale_size)."""
    scale = min(long / max(height, width), short / min(height, width))
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize(image: torch.Tensor, target: dict, size: tuple[int, int]) -> tuple[torch.Tensor, dict]:
    """Image [3, H, W] (bilinear), masks (nearest) and boxes (scaled, clipped) to `size`."""
    height, width = image.shape[-2:]
    new_height, new_width = size
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    target = dict(target)
    scale = torch.tensor([new_width / width, new_height / height] * 2)
    boxes = target["boxes"] * scale
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, new_width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, new_height)
    target["boxes"] = boxes
    if "masks" in target:
        masks = target["masks"]  # [N, H, W] uint8
        if len(masks):
            resized = F.interpolate(masks[None].float(), size=size, mode="nearest")[0]
        else:
            resized = masks.new_zeros((0, *size))
        target["masks"] = resized.to(masks.dtype)
    return image, target


def random_resize(image, target, short_sides: Sequence[int], max_size: int, generator):
    """mmdet Resize, multiscale_mode "value": one of `short_sides` (long side <= max_size)."""
    short = short_sides[_randint(0, len(short_sides), generator)]
    size = rescaled_size(*image.shape[-2:], short, max_size)
    return resize(image, target, size)


def random_crop(image, target, crop_range: tuple[int, int], generator):
    """mmdet RandomCrop, crop_type "absolute_range", allow_negative_crop (module doc)."""
    height, width = image.shape[-2:]
    low, high = crop_range
    crop_h = _randint(min(height, low), min(height, high) + 1, generator)
    crop_w = _randint(min(width, low), min(width, high) + 1, generator)
    top = _randint(0, max(height - crop_h, 0) + 1, generator)
    left = _randint(0, max(width - crop_w, 0) + 1, generator)
    image = image[:, top : top + crop_h, left : left + crop_w]
    target = dict(target)
    boxes = target["boxes"] - torch.tensor([left, top, left, top], dtype=torch.float32)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, crop_w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, crop_h)
    target["boxes"] = boxes
    if "masks" in target:
        target["masks"] = target["masks"][:, top : top + crop_h, left : left + crop_w]
    return image, keep_boxes(target, (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))


def keep_boxes(target: dict, keep: torch.Tensor) -> dict:
    """The target with only the boxes (and their labels, masks, flags) where `keep`."""
    return {k: v[keep] if k in PER_BOX else v for k, v in target.items()}


def detr_augment(
    image: torch.Tensor,
    target: dict,
    generator: torch.Generator,
    *,
    sizes: Sequence[int],
    max_size: int,
) -> tuple[torch.Tensor, dict]:
    """One of the two policies (p 1/2 each) on (image [3, H, W], target); `sizes` are the
    multi-scale short sides (480..800 step 32), `max_size` the long side cap (1333)."""
    if torch.rand((), generator=generator) < 0.5:
        image, target = random_resize(image, target, sizes, max_size, generator)
    else:
        image, target = random_resize(image, target, CROP_SHORT_SIDES, max_size, generator)
        image, target = random_crop(image, target, CROP_RANGE, generator)
        image, target = random_resize(image, target, sizes, max_size, generator)
    # DEVIATION(degenerate-boxes): torchvision's detectors refuse zero-area boxes, which mmdet
    # keeps (e.g. a box on the border clipped by a resize); they are dropped here.
    boxes = target["boxes"]
    return image, keep_boxes(target, (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
