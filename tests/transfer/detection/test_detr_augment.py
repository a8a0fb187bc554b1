"""The DETR augmentation of SelfPatch's Mask R-CNN config against mmdet 2.x's formulas: keep-ratio
sizes, boxes scaled and clipped, the absolute-range crop (sizes, boxes cropped and clipped, empty
boxes dropped with their labels and masks, masks cropped the same way), the two policies drawn
with p 1/2, and the draws reproducible per (seed, position, index) through train.FlipView."""

import pytest
import torch

from transfer.detection import detr_augment as augment
from transfer.detection.train import FlipView

SIZES = tuple(range(480, 801, 32))


def _item(height: int = 480, width: int = 640):
    """An image with two boxes and their masks (the masks fill the boxes)."""
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[10.0, 20.0, 200.0, 300.0], [400.0, 100.0, 630.0, 470.0]])
    masks = torch.zeros(2, height, width, dtype=torch.uint8)
    for k, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
        masks[k, y0:y1, x0:x1] = 1
    target = {"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks, "image_id": 7}
    return image, target


def test_keep_ratio_size_is_mmcv_rescale_size():
    # scale = min(long / max(h, w), short / min(h, w)); side = int(side * scale + 0.5)
    assert augment.rescaled_size(480, 640, 800, 1333) == (800, int(640 * 800 / 480 + 0.5))
    assert augment.rescaled_size(100, 1000, 800, 1333) == (int(100 * 1.333 + 0.5), 1333)
    assert augment.rescaled_size(640, 480, 512, 1333) == (683, 512)


def test_resize_scales_boxes_by_the_realised_ratio_and_masks_follow():
    image, target = _item()
    resized, out = augment.resize(image, target, (800, 1067))
    assert resized.shape == (3, 800, 1067) and out["masks"].shape == (2, 800, 1067)
    scale = torch.tensor([1067 / 640, 800 / 480, 1067 / 640, 800 / 480])
    assert torch.allclose(out["boxes"], target["boxes"] * scale)
    for mask, box in zip(out["masks"], out["boxes"]):  # nearest: the mask still fills its box
        rows, cols = mask.nonzero(as_tuple=True)
        assert abs(cols.min() - box[0]) <= 1 and abs(cols.max() + 1 - box[2]) <= 1
        assert abs(rows.min() - box[1]) <= 1 and abs(rows.max() + 1 - box[3]) <= 1
    outside = dict(target, boxes=torch.tensor([[-5.0, 10.0, 700.0, 500.0]]))
    assert augment.resize(image, outside, (240, 320))[1]["boxes"].tolist() == [
        [0.0, 5.0, 320.0, 240.0]
    ]  # clipped to the image


def test_random_crop_follows_mmdet_draws_and_drops_empty_boxes():
    image, target = _item()
    for seed in range(20):
        generator = torch.Generator().manual_seed(seed)
        cropped, out = augment.random_crop(image, target, (384, 600), generator)
        replay = torch.Generator().manual_seed(seed)  # the same draws, in mmdet's order
        crop_h = int(torch.randint(384, 481, (), generator=replay))  # min(h, 600) = 480
        crop_w = int(torch.randint(384, 601, (), generator=replay))
        top = int(torch.randint(0, 480 - crop_h + 1, (), generator=replay))
        left = int(torch.randint(0, 640 - crop_w + 1, (), generator=replay))
        assert torch.equal(cropped, image[:, top : top + crop_h, left : left + crop_w])
        shifted = target["boxes"] - torch.tensor([left, top, left, top])
        shifted[:, 0::2] = shifted[:, 0::2].clamp(0, crop_w)
        shifted[:, 1::2] = shifted[:, 1::2].clamp(0, crop_h)
        keep = (shifted[:, 2] > shifted[:, 0]) & (shifted[:, 3] > shifted[:, 1])
        assert torch.equal(out["boxes"], shifted[keep])
        assert torch.equal(out["labels"], target["labels"][keep])
        expected_masks = target["masks"][keep][:, top : top + crop_h, left : left + crop_w]
        assert torch.equal(out["masks"], expected_masks) and out["image_id"] == 7


def test_a_crop_without_boxes_is_kept_with_empty_targets():
    image = torch.rand(3, 500, 500)
    masks = torch.zeros(1, 500, 500, dtype=torch.uint8)
    masks[0, 490:, 490:] = 1
    target = {"boxes": torch.tensor([[490.0, 490.0, 500.0, 500.0]]), "labels": torch.tensor([1])}
    target["masks"] = masks
    for seed in range(50):  # the box sits in the corner: most crops miss it
        generator = torch.Generator().manual_seed(seed)
        cropped, out = augment.random_crop(image, target, (384, 400), generator)
        if not out["boxes"].numel():
            break
    assert out["boxes"].shape == (0, 4) and out["labels"].shape == (0,)
    assert out["masks"].shape == (0, *cropped.shape[-2:])  # allow_negative_crop: kept


def test_policies_are_drawn_half_and_half_and_end_at_a_multiscale_size(monkeypatch):
    crops = []
    real_crop = augment.random_crop
    monkeypatch.setattr(
        augment, "random_crop", lambda *a: crops.append(a[0].shape) or real_crop(*a)
    )
    image, target = _item()
    trials = 200
    for seed in range(trials):
        generator = torch.Generator().manual_seed(seed)
        out_image, out = augment.detr_augment(image, target, generator, sizes=SIZES, max_size=1333)
        assert min(out_image.shape[-2:]) in SIZES  # crops are at most 600/384 long: no cap
        assert out["masks"].shape[-2:] == out_image.shape[-2:]
        assert len(out["boxes"]) == len(out["labels"]) == len(out["masks"])
    assert abs(len(crops) / trials - 0.5) < 0.12  # p 1/2 (binomial sd 0.035)
    assert {min(shape[-2:]) for shape in crops} == {400, 500, 600}  # crop policy's first resize


class _OneItem(torch.utils.data.Dataset):
    def __len__(self):
        return 1

    def __getitem__(self, index):
        return _item(96, 128)


def test_augmentation_is_reproducible_per_seed_position_and_index():
    def view(seed):
        return FlipView(
            _OneItem(),
            seed,
            True,
            lambda i, t, g: augment.detr_augment(i, t, g, sizes=(32, 48), max_size=1333),
        )

    first, again = view(0)[(5, 0)], view(0)[(5, 0)]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1]["boxes"], again[1]["boxes"])
    shapes = {tuple(view(0)[(position, 0)][0].shape) for position in range(12)}
    assert len(shapes) > 1  # positions draw different sizes/crops
    assert view(1)[(5, 0)][0].shape != first[0].shape or not torch.equal(
        view(1)[(5, 0)][0], first[0]
    )


@pytest.mark.parametrize("flip", [False, True])
def test_flip_comes_before_the_policy_from_the_same_generator(flip):
    """FlipView draws the flip first, then the augmentation continues the same generator."""
    seen = []

    def stand_in(image, target, generator):
        seen.append(torch.rand((), generator=generator))
        return image, target

    view = FlipView(_OneItem(), 3, flip, stand_in)
    reference = view.generator(4, 0)
    if flip:
        torch.rand((), generator=reference)  # the flip draw
    view[(4, 0)]
    assert seen == [torch.rand((), generator=reference)]
