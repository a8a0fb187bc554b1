"""The "authors" ops (deepmind-research/byol), each checked against its formula written here.

utils/augmentations.py: brightness x + delta, contrast f (x_c - mean_c) + mean_c, saturation
S -> clip(f S) in HSV, each jitter op clipped to [0, 1]; blur with zero padding. utils/dataset.py:
one crop draw with width and height clipped to the image; resize without antialiasing.
"""

import colorsys
import dataclasses
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from pretrain import augment
from pretrain.augment import PhotometricParams
from pretrain.config import (
    AUGMENT_PARTS,
    AUGMENT_SEMANTICS,
    ConfigError,
    PretrainConfig,
    augment_semantics,
)
from pretrain.identity import identity_differences
from tests.pretrain.test_augment import _gen
from tests.pretrain.test_augment import _params as torchvision_identity


def _params(batch: int, **overrides: torch.Tensor) -> PhotometricParams:
    """Authors' identity parameters (brightness delta 0, factors 1), jitter on, then overrides."""
    return torchvision_identity(batch, **({"brightness": torch.zeros(batch)} | overrides))


def test_byol_views_default_to_the_authors_ops_and_config_records_them():
    assert all(view.ops == "authors" for view in augment.byol_views())
    assert all(view.ops == "torchvision" for view in augment.byol_views(ops="torchvision"))
    assert PretrainConfig().augment_ops == "authors"
    saved = dataclasses.asdict(PretrainConfig(augment_ops="torchvision"))
    # part of the run's identity: a run dir made with the other semantics is refused on resume
    assert identity_differences(saved, dataclasses.asdict(PretrainConfig())) == [
        "augment_ops: run has 'torchvision', now 'authors'"
    ]


def test_brightness_adds_a_delta_and_clips():
    images = torch.rand(3, 3, 8, 8, generator=_gen(1))
    delta = torch.tensor([-0.4, 0.1, 0.4])
    out = augment.apply_photometric(images, _params(3, brightness=delta), ops="authors")
    for i in range(3):
        expected = torch.clamp(images[i] + float(delta[i]), 0.0, 1.0)
        torch.testing.assert_close(out[i], expected, atol=1e-6, rtol=0)


def test_contrast_scales_each_channel_about_its_own_mean():
    images = torch.rand(2, 3, 8, 8, generator=_gen(2))
    images[:, 0] *= 0.3  # channel means that differ a lot
    factor = torch.tensor([0.6, 1.4])
    out = augment.apply_photometric(images, _params(2, contrast=factor), ops="authors")
    for i in range(2):
        for c in range(3):
            channel = images[i, c]
            mean = channel.sum() / channel.numel()
            expected = torch.clamp(float(factor[i]) * (channel - mean) + mean, 0.0, 1.0)
            torch.testing.assert_close(out[i, c], expected, atol=1e-6, rtol=0)


def test_saturation_scales_s_in_hsv_and_clips_it():
    images = torch.rand(2, 3, 5, 5, generator=_gen(3))
    factor = torch.tensor([0.8, 1.2])
    out = augment.apply_photometric(images, _params(2, saturation=factor), ops="authors")
    for i in range(2):
        for y in range(5):
            for x in range(5):
                h, s, v = colorsys.rgb_to_hsv(*images[i, :, y, x].tolist())
                rgb = colorsys.hsv_to_rgb(h, min(max(s * float(factor[i]), 0.0), 1.0), v)
                torch.testing.assert_close(out[i, :, y, x], torch.tensor(rgb), atol=1e-5, rtol=0)


def test_each_jitter_op_clips_before_the_next():
    # brightness +0.4 then contrast 0.6: clipping between them changes the result
    image = torch.full((1, 3, 4, 4), 0.8)
    image[..., :2] = 0.1
    order = torch.tensor([[0, 1, 2, 3]])
    params = _params(1, order=order, brightness=torch.tensor([0.4]), contrast=torch.tensor([0.6]))
    out = augment.apply_photometric(image, params, ops="authors")
    bright = torch.clamp(image + 0.4, 0.0, 1.0)  # 0.5 and 1.0 (clipped from 1.2)
    mean = bright.mean(dim=(2, 3), keepdim=True)  # 0.75
    torch.testing.assert_close(out, torch.clamp(0.6 * (bright - mean) + mean, 0, 1))


def test_blur_pads_with_zeros():
    image = torch.ones(1, 3, 9, 9)
    sigma = 1.5
    out = augment.apply_photometric(
        image, _params(1, blur_sigma=torch.tensor([sigma])), ops="authors"
    )
    size = augment.blur_kernel_size(9)
    radius = size // 2
    taps = torch.tensor([math.exp(-(k**2) / (2 * sigma**2)) for k in range(-radius, radius + 1)])
    taps = taps / taps.sum()
    # a constant image: at the corner, only the taps inside the image count (zeros outside)
    inside = taps[radius:].sum().item()
    assert abs(out[0, 0, 0, 0].item() - inside * inside) < 1e-5
    assert abs(out[0, 0, 4, 4].item() - 1.0) < 1e-5  # the centre sees no padding


def test_photometric_ranges_are_the_authors():
    params = augment.draw_photometric(augment.byol_views()[0], 4000, _gen(4))
    assert -0.4 <= params.brightness.min() < -0.39 and 0.39 < params.brightness.max() <= 0.4
    assert 0.6 <= params.contrast.min() and params.contrast.max() <= 1.4
    assert 0.8 <= params.saturation.min() and params.saturation.max() <= 1.2


def test_crop_is_one_draw_clipped_to_the_image():
    view = augment.byol_views()[0]
    height, width = 30, 40
    for seed in range(50):
        generator = _gen(seed)
        scale = torch.empty(1).uniform_(0.08, 1.0, generator=generator).item()
        log_ratio = torch.log(torch.tensor((3 / 4, 4 / 3))).tolist()
        aspect = math.exp(torch.empty(1).uniform_(*log_ratio, generator=generator).item())
        crop_w = min(round(math.sqrt(height * width * scale * aspect)), width)
        crop_h = min(round(math.sqrt(height * width * scale / aspect)), height)
        left = int(torch.randint(0, width - crop_w + 1, (1,), generator=generator))
        top = int(torch.randint(0, height - crop_h + 1, (1,), generator=generator))
        assert augment.draw_crop((height, width), view, _gen(seed)) == (top, left, crop_h, crop_w)
    # a very wide image: the crop is clipped to its height, never a centre-crop fallback
    boxes = [augment.draw_crop((10, 400), view, _gen(seed)) for seed in range(20)]
    assert any(box[2] == 10 and box[3] > 13 for box in boxes)


def test_resize_has_no_antialiasing():
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=_gen(5))
    out = augment.crop_resize(image, (0, 0, 64, 64), 16, antialias=False)
    expected = F.interpolate(image[None].float(), (16, 16), mode="bicubic", align_corners=False)
    expected = expected.clamp(0, 255).round().to(torch.uint8)[0]
    assert torch.equal(out, expected)
    assert not torch.equal(
        out, augment.crop_resize(image, (0, 0, 64, 64), 16)
    )  # antialiased differs


def test_authors_and_torchvision_views_share_draws_but_differ():
    image = torch.randint(0, 256, (3, 48, 40), dtype=torch.uint8, generator=_gen(6))
    authors = augment.ViewDistribution(blur_prob=1.0, solarize_prob=0.0, ops="authors")
    torchvision = dataclasses.replace(authors, ops="torchvision")
    one, other = (
        augment.augment_view(image, authors, 32, _gen(7)),
        augment.augment_view(image, torchvision, 32, _gen(7)),
    )
    assert one.shape == other.shape == (3, 32, 32) and 0 <= one.min() and one.max() <= 1
    assert (one - other).abs().max() > 1e-3


def test_augment_ops_switches_one_part_at_a_time():
    """Each part (crop, resize, colour, blur) takes its semantics from its own override: a view
    depends only on the four resolved semantics (two spellings of one mapping give the same view)
    and each of the 16 mappings gives a different view."""
    image = (torch.rand(3, 40, 30, generator=_gen(3)) * 255).to(torch.uint8)  # 4:3, not square
    views = {}
    for mapping in itertools.product(AUGMENT_SEMANTICS, repeat=len(AUGMENT_PARTS)):
        spellings = [
            ",".join([base] + [f"{p}={s}" for p, s in zip(AUGMENT_PARTS, mapping) if s != base])
            for base in AUGMENT_SEMANTICS
        ]
        assert [dict(augment_semantics(ops)) for ops in spellings] == 2 * [
            dict(zip(AUGMENT_PARTS, mapping))
        ]
        drawn = []
        for ops in spellings:
            dist = augment.ViewDistribution(
                blur_prob=1.0, solarize_prob=0.0, jitter_prob=1.0, crop_scale=(0.3, 1.0), ops=ops
            )
            drawn.append(augment.augment_view(image, dist, 16, _gen(4)))
        torch.testing.assert_close(drawn[0], drawn[1], rtol=0, atol=0)
        views[mapping] = drawn[0]
    for (a, view_a), (b, view_b) in itertools.combinations(views.items(), 2):
        assert (view_a - view_b).abs().max() > 1e-3, (a, b)


def test_augment_ops_refuses_what_it_does_not_know_in_one_sentence():
    for bad in ("tv", "authors,colour", "authors,color=torchvision", "authors,crop=tf"):
        with pytest.raises(ConfigError, match="augment_ops"):
            PretrainConfig(augment_ops=bad)
    assert dict(augment_semantics("authors,colour=torchvision")) == {
        "crop": "authors",
        "resize": "authors",
        "colour": "torchvision",
        "blur": "authors",
    }
