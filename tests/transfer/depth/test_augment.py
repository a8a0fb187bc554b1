"""NYU depth views: shapes, seeded determinism, joint flip, colour ops, the eval footprint."""

import dataclasses

import pytest
import torch

from pretrain import image_ops
from transfer.depth.augment import DepthAugmentation, eval_view, footprint, train_view

PLAIN = dataclasses.replace(  # every random op off, no normalisation: views are comparable
    DepthAugmentation(),
    flip=False,
    grayscale_p=0.0,
    brightness=0.0,
    saturation=(1.0, 1.0),
    hue=(0.0, 0.0),
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
)


def _frame(height=480, width=640, seed=0):
    """An asymmetric image and a coordinate-coded depth (row x 1000 + column + 1, in mm)."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, height, width), generator=generator, dtype=torch.uint8)
    rows = torch.arange(height, dtype=torch.float32)[:, None]
    cols = torch.arange(width, dtype=torch.float32)[None, :]
    depth = (rows * 1000 + cols + 1) / 1000
    depth[:40, :50] = 0.0  # unmeasured
    return image, depth


def test_defaults_are_byol_d6():
    aug = DepthAugmentation()
    assert (aug.scale, aug.crop, aug.flip, aug.grayscale_p) == (0.5, (228, 304), True, 0.3)
    assert (aug.brightness, aug.saturation, aug.hue) == (0.1255, (0.5, 1.5), (-0.2, 0.2))
    assert aug.mean == (0.485, 0.456, 0.406) and aug.std == (0.229, 0.224, 0.225)


def test_train_view_shapes_and_determinism_per_seed():
    image, depth = _frame()
    aug = DepthAugmentation()
    view, target = train_view(image, depth, aug, seed=3)
    assert view.shape == (3, 228, 304) and view.dtype == torch.float32
    assert target.shape == (228, 304)
    again, target_again = train_view(image, depth, aug, seed=3)
    assert torch.equal(view, again) and torch.equal(target, target_again)
    others = [train_view(image, depth, aug, seed=s)[0] for s in range(4, 8)]
    assert not any(torch.equal(view, other) for other in others)


def test_depth_is_resized_by_nearest_so_every_target_is_a_measured_value():
    image, depth = _frame()
    _, target = train_view(image, depth, PLAIN, seed=0)
    assert set(target.unique().tolist()) <= set(depth.unique().tolist())
    # 480x640 -> 240x320, centre crop at (6, 8): downsampled pixel (i, j) is original (2i, 2j)
    torch.testing.assert_close(target, depth[12:468:2, 16:624:2], rtol=0, atol=0)


def test_flip_flips_image_and_depth_together():
    image, depth = _frame()
    flip_only = dataclasses.replace(PLAIN, flip=True)
    plain_view, plain_depth = train_view(image, depth, PLAIN, seed=0)
    flipped = set()
    for seed in range(12):
        view, target = train_view(image, depth, flip_only, seed=seed)
        if torch.equal(target, plain_depth.flip(-1)):
            assert torch.allclose(view, plain_view.flip(-1), atol=1e-5)
            flipped.add(True)
        else:
            assert torch.equal(target, plain_depth) and torch.allclose(view, plain_view, atol=1e-5)
            flipped.add(False)
    assert flipped == {True, False}  # both outcomes occur over 12 seeds


def test_colour_ops_are_the_authors_semantics_and_leave_depth_alone():
    image, depth = _frame(96, 128)
    small = dataclasses.replace(PLAIN, crop=(40, 56))
    reference, reference_depth = train_view(image, depth, small, seed=0)
    gray = dataclasses.replace(small, grayscale_p=1.0)
    view, target = train_view(image, depth, gray, seed=0)
    assert torch.equal(target, reference_depth)
    torch.testing.assert_close(view, image_ops.luma(reference[None])[0].expand(3, -1, -1))
    bright = dataclasses.replace(small, brightness=0.1255)
    shifts = []
    for seed in range(6):
        view, _ = train_view(image, depth, bright, seed=seed)
        inside = (reference > 0.2) & (reference < 0.8)  # not clipped at either end
        shift = (view - reference)[inside]
        assert torch.allclose(shift, shift[0].expand_as(shift), atol=1e-5)  # added, not scaled
        shifts.append(float(shift[0]))
    assert all(abs(s) <= 0.1255 + 1e-6 for s in shifts) and len(set(shifts)) == 6


def test_eval_view_has_no_randomness_and_its_footprint_maps_back_exactly():
    image, depth = _frame()
    aug = DepthAugmentation()
    assert footprint(480, 640, aug) == (12, 16, 468, 624)  # 228x304 at x0.5 covers 456x608
    view, truth = eval_view(image, depth, aug)
    assert view.shape == (3, 228, 304) and truth.shape == (456, 608)
    assert torch.equal(truth, depth[12:468, 16:624])
    plain_view, plain_depth = train_view(image, depth, PLAIN, seed=5)
    # the training target (nearest) is the footprint's every other pixel: the same region
    assert torch.equal(truth[::2, ::2], plain_depth)
    normalised = (plain_view - torch.tensor(aug.mean)[:, None, None]) / torch.tensor(aug.std)[
        :, None, None
    ]
    torch.testing.assert_close(view, normalised, atol=1e-4, rtol=0)  # same input pixels
    again = eval_view(image, depth, aug)
    assert torch.equal(again[0], view) and torch.equal(again[1], truth)


def test_a_frame_smaller_than_the_crop_is_refused():
    image, depth = _frame(200, 300)
    with pytest.raises(ValueError, match="smaller than the 228x304 crop"):
        train_view(image, depth, DepthAugmentation(), seed=0)
