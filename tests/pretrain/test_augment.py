"""Protocol tests for pretrain/augment.py: BYOL v3, App. B, Table 6; the "torchvision" ops checked
against torchvision (the "authors" ops: tests/pretrain/test_augment_authors.py)."""

import dataclasses
import math

import pytest
import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF

from pretrain.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PhotometricParams,
    ViewDistribution,
    apply_photometric,
    augment_view,
    blur_kernel_size,
    byol_views,
    crop_resize,
    draw_crop,
    draw_photometric,
    eval_view,
    normalize,
)

TABLE_6 = {  # BYOL v3, Table 6: probability in (T, T')
    "flip": (0.5, 0.5),
    "jitter": (0.8, 0.8),
    "grayscale": (0.2, 0.2),
    "blur": (1.0, 0.1),
    "solarize": (0.0, 0.2),
}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _params(batch: int, **overrides: torch.Tensor) -> PhotometricParams:
    """Identity parameters for `batch` images (jitter on, with neutral factors), then overrides."""
    false = torch.zeros(batch, dtype=torch.bool)
    fields = dict(
        flip=false,
        jitter=~false,
        order=torch.arange(4).repeat(batch, 1),
        brightness=torch.ones(batch),
        contrast=torch.ones(batch),
        saturation=torch.ones(batch),
        hue=torch.zeros(batch),
        grayscale=false,
        blur_sigma=torch.zeros(batch),
        solarize=false,
    )
    fields.update(overrides)
    return PhotometricParams(**fields)


def _reference(image: torch.Tensor, params: PhotometricParams, i: int) -> torch.Tensor:
    """Image i's view through torchvision's functional ops, one op at a time, as in the paper."""
    if params.flip[i]:
        image = TF.horizontal_flip(image)
    if params.jitter[i]:
        ops = (
            lambda x: TF.adjust_brightness(x, float(params.brightness[i])),
            lambda x: TF.adjust_contrast(x, float(params.contrast[i])),
            lambda x: TF.adjust_saturation(x, float(params.saturation[i])),
            lambda x: TF.adjust_hue(x, float(params.hue[i])),
        )
        for op_id in params.order[i].tolist():
            image = ops[op_id](image)
    if params.grayscale[i]:
        image = TF.rgb_to_grayscale(image, num_output_channels=3)
    if params.blur_sigma[i] > 0:
        size = blur_kernel_size(image.shape[-1])
        image = TF.gaussian_blur(image, [size, size], [float(params.blur_sigma[i])] * 2)
    if params.solarize[i]:
        image = TF.solarize(image, 0.5)
    return image


def test_byol_views_follow_table_6():
    view, view_prime = byol_views(ops="torchvision")
    for dist in (view, view_prime):
        assert (dist.crop_scale, dist.crop_ratio) == ((0.08, 1.0), (3 / 4, 4 / 3))
        assert (dist.brightness, dist.contrast, dist.saturation, dist.hue) == (0.4, 0.4, 0.2, 0.1)
        assert (dist.blur_sigma, dist.solarize_threshold) == ((0.1, 2.0), 0.5)
    for name, probs in TABLE_6.items():
        assert (getattr(view, f"{name}_prob"), getattr(view_prime, f"{name}_prob")) == probs
    small, small_prime = byol_views(small_images=True, ops="torchvision")
    assert small.blur_prob == small_prime.blur_prob == 0.0
    assert small.crop_scale == small_prime.crop_scale == (0.2, 1.0)
    assert small_prime.solarize_prob == 0.2
    with pytest.raises(ValueError, match="probabilities"):
        ViewDistribution(blur_prob=1.5, solarize_prob=0.0)


@pytest.mark.parametrize("view_index", [0, 1])
def test_draw_frequencies_match_table_6(view_index):
    dist, n = byol_views(ops="torchvision")[view_index], 4000
    params = draw_photometric(dist, n, _gen(view_index))
    observed = {
        "flip": params.flip,
        "jitter": params.jitter,
        "grayscale": params.grayscale,
        "blur": params.blur_sigma > 0,
        "solarize": params.solarize,
    }
    for name, flags in observed.items():
        p = TABLE_6[name][view_index]
        tolerance = 4 * math.sqrt(p * (1 - p) / n)  # 4 binomial sigmas; exact for p in {0, 1}
        assert abs(flags.float().mean().item() - p) <= tolerance, name
    blurred = params.blur_sigma[params.blur_sigma > 0]
    assert blurred.min() >= 0.1 and blurred.max() <= 2.0
    assert params.brightness.min() >= 0.6 and params.brightness.max() <= 1.4
    assert params.contrast.min() >= 0.6 and params.contrast.max() <= 1.4
    assert params.saturation.min() >= 0.8 and params.saturation.max() <= 1.2
    assert params.hue.min() >= -0.1 and params.hue.max() <= 0.1
    # uniform, not concentrated: the mean of U(0.6, 1.4) is 1.0, with sd 0.23 / sqrt(n)
    assert abs(params.brightness.mean().item() - 1.0) < 4 * 0.8 / math.sqrt(12 * n)


def test_every_image_draws_its_own_parameters():
    view, _ = byol_views(ops="torchvision")
    params = draw_photometric(view, 2, _gen(0))
    for name in ("brightness", "contrast", "saturation", "hue"):
        assert getattr(params, name)[0] != getattr(params, name)[1], name
    generator = _gen(0)
    crops = {draw_crop((224, 224), view, generator) for _ in range(2)}
    assert len(crops) == 2


def test_same_seed_reproduces_and_other_seed_differs():
    view, view_prime = byol_views(ops="torchvision")
    first, again, other = (draw_photometric(view_prime, 16, _gen(s)) for s in (7, 7, 8))
    for field in dataclasses.fields(PhotometricParams):
        assert torch.equal(getattr(first, field.name), getattr(again, field.name)), field.name
    assert not torch.equal(first.brightness, other.brightness)
    assert draw_crop((100, 90), view, _gen(7)) == draw_crop((100, 90), view, _gen(7))
    image = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8)
    assert torch.equal(
        augment_view(image, view_prime, 32, _gen(3)), augment_view(image, view_prime, 32, _gen(3))
    )
    assert not torch.equal(
        augment_view(image, view_prime, 32, _gen(3)), augment_view(image, view_prime, 32, _gen(4))
    )


def test_drawing_leaves_the_global_rng_alone():
    view, _ = byol_views(ops="torchvision")
    torch.manual_seed(0)
    before = torch.get_rng_state()
    draw_photometric(view, 8, _gen(1))
    draw_crop((64, 64), view, _gen(1))
    augment_view(torch.zeros(3, 20, 20, dtype=torch.uint8), view, 16, _gen(1))
    assert torch.equal(before, torch.get_rng_state())


@pytest.mark.parametrize("image_hw", [(224, 224), (375, 500), (500, 375), (10, 400)])
def test_draw_crop_matches_torchvision_draw_for_draw(image_hw):
    view, _ = byol_views(ops="torchvision")
    reference = T.RandomResizedCrop(224, scale=view.crop_scale, ratio=view.crop_ratio)
    image = torch.empty(3, *image_hw)
    for seed in range(30):
        torch.manual_seed(seed)
        expected = reference.make_params([image])
        expected = (expected["top"], expected["left"], expected["height"], expected["width"])
        assert draw_crop(image_hw, view, _gen(seed)) == expected


def test_draw_crop_area_and_ratio_in_range():
    view, _ = byol_views(ops="torchvision")
    generator = _gen(0)
    for height, width in ((224, 224), (375, 500)):
        for _ in range(1000):
            top, left, crop_h, crop_w = draw_crop((height, width), view, generator)
            assert 0 <= top <= height - crop_h and 0 <= left <= width - crop_w
            if (crop_h, crop_w) == (height, width):
                continue  # may be the fallback
            # the drawn area and ratio are exact before the sides are rounded to whole pixels
            assert (crop_h + 0.5) * (crop_w + 0.5) >= 0.08 * height * width
            assert (crop_w + 0.5) / (crop_h - 0.5) >= 3 / 4
            assert (crop_w - 0.5) / (crop_h + 0.5) <= 4 / 3


def test_draw_crop_fallback_is_a_ratio_clamped_centre_crop():
    view, _ = byol_views(ops="torchvision")
    # no crop of 8% of a 10x400 strip with ratio <= 4/3 fits in 10 rows: always the fallback
    assert draw_crop((10, 400), view, _gen(0)) == (0, (400 - 13) // 2, 10, 13)
    assert draw_crop((400, 10), view, _gen(0)) == ((400 - 13) // 2, 0, 13, 10)


def test_crop_resize_matches_torchvision_and_replicates_gray():
    image = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)
    crop = (5, 9, 30, 41)
    expected = TF.resized_crop(
        image, *crop, size=[32, 32], interpolation=T.InterpolationMode.BICUBIC, antialias=True
    )
    out = crop_resize(image, crop, 32)
    assert out.dtype == torch.uint8 and out.shape == (3, 32, 32)
    assert torch.equal(out, expected)
    gray = crop_resize(image[:1], crop, 32)
    assert gray.shape == (3, 32, 32) and torch.equal(gray[0], gray[2])


@pytest.mark.parametrize("op", ["brightness", "contrast", "saturation", "hue"])
def test_each_jitter_op_matches_torchvision_per_image(op):
    images = torch.rand(3, 3, 24, 24, generator=_gen(1))
    factors = {"brightness": [0.6, 1.0, 1.4], "contrast": [0.6, 1.1, 1.4]}
    factors |= {"saturation": [0.8, 1.05, 1.2], "hue": [-0.1, 0.03, 0.1]}
    params = _params(3, **{op: torch.tensor(factors[op])})
    out = apply_photometric(images, params)
    for i in range(3):
        expected = getattr(TF, f"adjust_{op}")(images[i], factors[op][i])
        torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=0)


def test_grayscale_blur_solarize_flip_match_torchvision_per_image():
    images = torch.rand(3, 3, 32, 32, generator=_gen(2))
    no_jitter = torch.zeros(3, dtype=torch.bool)
    cases = {
        "flip": (torch.tensor([True, False, True]), lambda x, i: TF.horizontal_flip(x)),
        "grayscale": (
            torch.tensor([True, False, True]),
            lambda x, i: TF.rgb_to_grayscale(x, num_output_channels=3),
        ),
        "solarize": (torch.tensor([False, True, True]), lambda x, i: TF.solarize(x, 0.5)),
        "blur_sigma": (
            torch.tensor([0.1, 0.0, 2.0]),
            lambda x, i: TF.gaussian_blur(x, [3, 3], [[0.1, 0.0, 2.0][i]] * 2),
        ),
    }
    for name, (values, reference) in cases.items():
        out = apply_photometric(images, _params(3, jitter=no_jitter, **{name: values}))
        for i in range(3):
            expected = reference(images[i], i) if values[i] else images[i]
            torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=0, msg=name)


def test_full_pipeline_matches_torchvision_and_batch_equals_one_by_one():
    images = torch.rand(8, 3, 48, 48, generator=_gen(3))
    _, view_prime = byol_views(ops="torchvision")
    forced = dataclasses.replace(view_prime, jitter_prob=1.0, blur_prob=0.5, solarize_prob=0.5)
    params = draw_photometric(forced, 8, _gen(4))
    for flags in (params.flip, params.grayscale, params.blur_sigma > 0, params.solarize):
        assert flags.any() and not flags.all()  # the seed exercises both branches of every op
    out = apply_photometric(images, params)
    for i in range(8):
        torch.testing.assert_close(out[i], _reference(images[i], params, i), atol=1e-5, rtol=0)
        single = PhotometricParams(
            **{f.name: getattr(params, f.name)[i : i + 1] for f in dataclasses.fields(params)}
        )
        torch.testing.assert_close(out[i : i + 1], apply_photometric(images[i : i + 1], single))
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_jitter_order_is_a_random_permutation_per_image_and_matters():
    view, _ = byol_views(ops="torchvision")
    order = draw_photometric(view, 1000, _gen(5)).order
    assert order.dtype == torch.int64 and order.shape == (1000, 4)
    assert torch.equal(order.sort(dim=1).values, torch.arange(4).expand(1000, 4))
    assert len({tuple(row) for row in order.tolist()}) == 24  # all 4! orders occur
    # the same image and factors in two orders: each matches torchvision's, and they differ
    image = torch.rand(1, 3, 16, 16, generator=_gen(6)).expand(2, -1, -1, -1)
    params = _params(
        2,
        order=torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]]),
        brightness=torch.full((2,), 1.4),
        contrast=torch.full((2,), 0.6),
        saturation=torch.full((2,), 1.2),
        hue=torch.full((2,), 0.1),
    )
    out = apply_photometric(image, params)
    for i in range(2):
        torch.testing.assert_close(out[i], _reference(image[i], params, i), atol=1e-5, rtol=0)
    assert (out[0] - out[1]).abs().max() > 1e-2


def test_params_cat_and_to():
    view, _ = byol_views(ops="torchvision")
    singles = [draw_photometric(view, 1, _gen(s)) for s in range(3)]
    batch = PhotometricParams.cat(singles)
    assert len(batch) == 3 and batch.order.shape == (3, 4)
    assert torch.equal(batch.hue, torch.cat([p.hue for p in singles]))
    assert batch.to("cpu").flip.dtype == torch.bool


def test_blur_kernel_size_scales_with_image_size():
    assert blur_kernel_size(224) == 23
    for size in (28, 32, 64, 96, 160):
        kernel = blur_kernel_size(size)
        assert kernel % 2 == 1 and kernel >= 3
        assert abs(kernel - 23 * size / 224) <= 1 or kernel == 3


@pytest.mark.parametrize(
    ("shape", "out_size", "small"), [((1, 28, 28), 28, True), ((3, 60, 45), 32, False)]
)
def test_augment_view_shape_dtype_range(shape, out_size, small):
    image = torch.randint(0, 256, shape, dtype=torch.uint8, generator=_gen(8))
    for dist in byol_views(small_images=small, ops="torchvision"):
        view = augment_view(image, dist, out_size, _gen(9))
        assert view.shape == (3, out_size, out_size) and view.dtype == torch.float32
        assert view.min() >= 0.0 and view.max() <= 1.0


def test_eval_view_is_a_deterministic_resize_and_centre_crop():
    image = torch.randint(0, 256, (3, 60, 90), dtype=torch.uint8, generator=_gen(10))
    out = eval_view(image, 28)
    assert out.shape == (3, 28, 28) and torch.equal(out, eval_view(image, 28))
    resized = TF.resize(image, [32], interpolation=T.InterpolationMode.BICUBIC, antialias=True)
    assert torch.equal(out, TF.center_crop(resized, [28, 28]).float() / 255)
    # resize_ratio 1.0 on an image whose shorter side already is out_size: a plain centre crop
    plain = eval_view(image[:1, :40, :60], 40, resize_ratio=1.0)
    torch.testing.assert_close(plain, image[:1, :40, 10:50].expand(3, -1, -1).float() / 255)


def test_normalize_single_and_batched():
    x = torch.rand(2, 3, 4, 4)
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    expected = (x - mean.view(3, 1, 1)) / std.view(3, 1, 1)
    torch.testing.assert_close(normalize(x, IMAGENET_MEAN, IMAGENET_STD), expected)
    torch.testing.assert_close(normalize(x[0], IMAGENET_MEAN, IMAGENET_STD), expected[0])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_apply_photometric_on_cuda_matches_cpu():
    _, view_prime = byol_views(ops="torchvision")
    images = torch.rand(16, 3, 64, 64, generator=_gen(11))
    params = draw_photometric(view_prime, 16, _gen(12))
    on_cpu = apply_photometric(images, params)
    on_cuda = apply_photometric(images.cuda(), params.to("cuda"))
    torch.testing.assert_close(on_cuda.cpu(), on_cpu, atol=1e-4, rtol=0)
