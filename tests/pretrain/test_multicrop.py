"""DINO's multi-crop views (pretrain/multicrop.py): counts and sizes, the draws' published ranges,
determinism under any worker count and resume, the rank split, torchvision's/PIL's exact ops, and
bad specs."""

import dataclasses

import pytest
import torch
import torchvision.transforms as T
from PIL import ImageFilter, ImageOps
from torch.utils.data import default_collate

from pretrain.augment import PhotometricParams
from pretrain.config import ConfigError
from pretrain.data import ImageDataset, SyntheticDataset, dataset_stats
from pretrain.multicrop import (
    MultiCrop,
    MultiCropSpec,
    build_multicrop_loader,
    multicrop_spec,
    to_picture,
)
from pretrain.presets import dino_vits16_in1k, selfpatch_vits16_in1k, tiny_vit_cpu

MEAN, STD = dataset_stats("imagenet")
TINY = MultiCropSpec(global_size=32, local_number=3, local_size=16)


def _dataset(num_images: int = 12, image_size: int = 40) -> SyntheticDataset:
    return SyntheticDataset(num_images=num_images, image_size=image_size, num_classes=3, seed=2)


def test_default_spec_makes_dinos_two_224_and_eight_96_crops():
    spec = MultiCropSpec()
    assert (spec.global_size, spec.local_number, spec.local_size) == (224, 8, 96)
    assert spec.global_scale == (0.4, 1.0) and spec.local_scale == (0.05, 0.4)  # main_dino.py
    assert (spec.flip_prob, spec.jitter_prob, spec.grayscale_prob) == (0.5, 0.8, 0.2)
    assert (spec.brightness, spec.contrast, spec.saturation, spec.hue) == (0.4, 0.4, 0.2, 0.1)
    assert spec.blur_probs == (1.0, 0.1, 0.5) and spec.blur_radius == (0.1, 2.0)  # utils.py
    assert spec.solarize_probs == (0.0, 0.2, 0.0) and spec.solarize_threshold == 128
    crops, label = MultiCrop(_dataset(), spec, 0, MEAN, STD)[(0, 5)]
    assert len(crops) == 10 and label == _dataset().targets[5]
    assert [tuple(c.shape) for c in crops] == [(3, 224, 224)] * 2 + [(3, 96, 96)] * 8
    assert all(c.dtype == torch.float32 for c in crops)


def test_spec_from_configs():
    assert multicrop_spec(dino_vits16_in1k()) == MultiCropSpec()
    selfpatch = multicrop_spec(selfpatch_vits16_in1k())  # alinlab/SelfPatch main_selfpatch.py
    assert selfpatch.global_scale == (0.25, 1.0) and selfpatch.local_scale == (0.05, 0.25)
    tiny = multicrop_spec(tiny_vit_cpu("dino"))
    assert (tiny.global_size, tiny.local_number, tiny.local_size) == (32, 2, 16)


def test_loader_batches_are_a_list_of_2_plus_n_crops():
    dataset = _dataset()
    loader, sampler = build_multicrop_loader(
        dataset, TINY, batch_size=4, seed=0, rank=0, world_size=1, num_workers=0, mean=MEAN, std=STD
    )
    sampler.set_epoch(0)
    batches = list(loader)
    assert len(batches) == 3
    crops, labels = batches[0]
    assert len(crops) == 2 + 3 and labels.shape == (4,)
    assert [tuple(c.shape) for c in crops] == [(4, 3, 32, 32)] * 2 + [(4, 3, 16, 16)] * 3


def test_every_draw_lies_in_its_published_range():
    spec = MultiCropSpec()
    views = MultiCrop(_dataset(), spec, 3, MEAN, STD)
    height, width = 60, 80
    draws = [
        views.draws((epoch, index), (height, width)) for epoch in range(40) for index in (0, 7)
    ]
    for sample in draws:
        assert len(sample) == 10
        for crop, (box, params) in enumerate(sample):
            low, high = spec.global_scale if crop < 2 else spec.local_scale
            top, left, crop_h, crop_w = box
            assert 0 <= top <= height - crop_h and 0 <= left <= width - crop_w
            # the drawn area is exact before the sides are rounded to whole pixels
            assert (crop_h + 0.5) * (crop_w + 0.5) >= low * height * width
            assert (crop_h - 0.5) * (crop_w - 0.5) <= high * height * width
            assert 0.6 <= params.brightness.item() <= 1.4 and 0.6 <= params.contrast.item() <= 1.4
            assert 0.8 <= params.saturation.item() <= 1.2 and -0.1 <= params.hue.item() <= 0.1
            assert sorted(params.order[0].tolist()) == [0, 1, 2, 3]
            sigma = params.blur_sigma.item()
            assert sigma == 0.0 or 0.1 <= sigma <= 2.0

    def rate(crops: slice, field: str) -> float:
        values = [getattr(p, field).item() for s in draws for _, p in s[crops]]
        return sum(bool(v) for v in values) / len(values)

    global_1, global_2, local = slice(0, 1), slice(1, 2), slice(2, None)
    assert rate(global_1, "blur_sigma") == 1.0 and rate(global_1, "solarize") == 0.0
    assert 0.02 <= rate(global_2, "blur_sigma") <= 0.2 and 0.1 <= rate(global_2, "solarize") <= 0.3
    assert 0.44 <= rate(local, "blur_sigma") <= 0.56 and rate(local, "solarize") == 0.0
    assert 0.75 <= rate(local, "jitter") <= 0.85 and 0.15 <= rate(local, "grayscale") <= 0.25
    assert 0.44 <= rate(local, "flip") <= 0.56  # 640 draws each: +-3 sd


def test_same_key_same_crops_other_key_other_crops():
    dataset = _dataset()
    first = MultiCrop(dataset, TINY, 11, MEAN, STD)[(2, 4)]
    again = MultiCrop(_dataset(), TINY, 11, MEAN, STD)[(2, 4)]  # fresh objects
    assert all(torch.equal(a, b) for a, b in zip(first[0], again[0]))
    for other in [
        MultiCrop(dataset, TINY, 11, MEAN, STD)[(3, 4)],
        MultiCrop(dataset, TINY, 12, MEAN, STD)[(2, 4)],
    ]:
        assert all(not torch.equal(a, b) for a, b in zip(first[0], other[0]))
    # the crops of one sample differ from one another
    assert not torch.equal(first[0][0], first[0][1]) and not torch.equal(first[0][2], first[0][3])


def _epoch_batches(num_workers: int, epoch: int, start_step: int = 0):
    loader, sampler = build_multicrop_loader(
        _dataset(),
        TINY,
        batch_size=4,
        seed=5,
        rank=0,
        world_size=1,
        num_workers=num_workers,
        mean=MEAN,
        std=STD,
    )
    sampler.set_epoch(epoch, start_step)
    return list(loader)


def test_crops_do_not_depend_on_workers_or_resume():
    in_process = _epoch_batches(0, epoch=1)
    two_workers = _epoch_batches(2, epoch=1)
    resumed = _epoch_batches(2, epoch=1, start_step=1)  # a run resumed after its first step
    assert len(in_process) == len(two_workers) == 3 and len(resumed) == 2
    for expected, got in zip(in_process, two_workers):
        assert torch.equal(expected[1], got[1])
        assert all(torch.equal(a, b) for a, b in zip(expected[0], got[0]))
    for expected, got in zip(in_process[1:], resumed):
        assert all(torch.equal(a, b) for a, b in zip(expected[0], got[0]))
    other_epoch = _epoch_batches(0, epoch=2)
    assert not torch.equal(in_process[0][0][0], other_epoch[0][0][0])


def test_ranks_see_disjoint_halves_of_the_global_batch():
    dataset = _dataset(num_images=16)
    per_rank = []
    for rank in (0, 1):
        loader, sampler = build_multicrop_loader(
            dataset,
            TINY,
            batch_size=3,
            seed=4,
            rank=rank,
            world_size=2,
            num_workers=0,
            mean=MEAN,
            std=STD,
        )
        sampler.set_epoch(0)
        keys, batch = next(iter(sampler)), next(iter(loader))
        expected = default_collate([MultiCrop(dataset, TINY, 4, MEAN, STD)[key] for key in keys])
        assert all(torch.equal(a, b) for a, b in zip(batch[0], expected[0]))
        assert batch[1].tolist() == [dataset.targets[index] for _, index in keys]
        per_rank.append(keys)
        global_batch = sampler.global_batch(0)
    assert len(per_rank[0]) == len(per_rank[1]) == 3
    assert not set(per_rank[0]) & set(per_rank[1])
    assert per_rank[0] + per_rank[1] == global_batch


def _dino_reference(monkeypatch, picture, box, params: PhotometricParams, size: int):
    """DINO's DataAugmentationDINO pipeline (torchvision classes, utils.py's PIL blur and
    solarize) with its randomness pinned to the drawn values."""
    order = params.order[0]
    factors = [params.brightness[0].item(), params.contrast[0].item()]
    factors += [params.saturation[0].item(), params.hue[0].item()]
    monkeypatch.setattr(T.RandomResizedCrop, "get_params", staticmethod(lambda *_: box))
    monkeypatch.setattr(T.ColorJitter, "get_params", staticmethod(lambda *_: (order, *factors)))
    torch.manual_seed(0)  # RandomApply(p=0) skips unless torch.rand(1) is exactly 0
    pipeline = T.Compose(
        [
            T.RandomResizedCrop(size, interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(p=float(params.flip[0])),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=float(params.jitter[0])),
            T.RandomGrayscale(p=float(params.grayscale[0])),
        ]
    )
    image = pipeline(picture)
    if params.blur_sigma[0] > 0:
        image = image.filter(ImageFilter.GaussianBlur(radius=params.blur_sigma[0].item()))
    if params.solarize[0]:
        image = ImageOps.solarize(image)
    return T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])(image)


def test_crops_are_torchvisions_and_pils_ops_with_the_drawn_parameters(monkeypatch):
    dataset = _dataset(num_images=4, image_size=48)
    spec = dataclasses.replace(TINY, local_number=6)
    views = MultiCrop(dataset, spec, 0, MEAN, STD)
    sizes = [32, 32] + [16] * 6
    seen = set()
    for epoch in range(6):
        key = (epoch, 1)
        picture = to_picture(dataset.load(1)[0])
        crops, _ = views[key]
        for crop, (box, params), size in zip(crops, views.draws(key, (48, 48)), sizes):
            expected = _dino_reference(monkeypatch, picture, box, params, size)
            assert torch.equal(crop, expected)
            seen |= {
                name
                for name in ("flip", "jitter", "grayscale", "solarize")
                if getattr(params, name)[0]
            }
            seen |= {"blur"} if params.blur_sigma[0] > 0 else set()
    assert seen == {"flip", "jitter", "grayscale", "blur", "solarize"}  # every op was checked


def test_gray_images_become_three_equal_channels():
    gray = torch.randint(
        0, 256, (3, 1, 30, 30), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    gray_set = ImageDataset("gray", ["a", "b"], [0, 1, 0], gray)
    rgb_set = ImageDataset("rgb", ["a", "b"], [0, 1, 0], gray.expand(-1, 3, -1, -1).clone())
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    for key in [(0, 0), (1, 2), (4, 1)]:
        crops, _ = MultiCrop(gray_set, TINY, 0, MEAN, STD)[key]
        replicated, _ = MultiCrop(rgb_set, TINY, 0, MEAN, STD)[key]
        for crop, other in zip(crops, replicated):
            assert crop.shape[0] == 3 and torch.equal(crop, other)
            pixels = crop * std + mean
            assert torch.allclose(pixels[0], pixels[1], atol=1e-6)
            assert torch.allclose(pixels[1], pixels[2], atol=1e-6)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (dict(local_size=64, global_size=32), "must not be larger than the global crops"),
        (dict(global_scale=(0.0, 1.0)), "global_scale must satisfy 0 < min <= max <= 1"),
        (dict(local_scale=(0.05, 1.5)), "local_scale must satisfy 0 < min <= max <= 1"),
        (dict(local_scale=(0.5, 0.1)), "local_scale must satisfy 0 < min <= max <= 1"),
        (dict(global_number=0), "exactly 2 global crops"),
        (dict(local_number=-1), "0 or more local crops"),
        (dict(blur_probs=(1.0, 1.5, 0.5)), "probabilities must lie in"),
    ],
)
def test_bad_spec_is_refused_with_one_sentence(change, words):
    with pytest.raises(ConfigError, match=words) as refusal:
        MultiCropSpec(**change)
    assert "\n" not in str(refusal.value)


def test_bad_config_is_refused_when_the_spec_is_made():
    config = dataclasses.replace(tiny_vit_cpu("dino"), local_crop_size=48)
    with pytest.raises(ConfigError, match="lower --local-crop-size or raise --image-size"):
        multicrop_spec(config)
