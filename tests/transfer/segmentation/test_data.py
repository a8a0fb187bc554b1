"""VOC2012 and ADE20K readers on trees in the real layouts, joint transforms, sampler, bad input."""

import numpy as np
import pytest
import torch
from PIL import Image

from pretrain.data import DataError
from tests.transfer.segmentation.layouts import make_ade20k, make_voc
from transfer.segmentation.augment import (
    IGNORE,
    Augmentation,
    crop_window,
    photometric_distortion,
    train_view,
)
from transfer.segmentation.data import (
    build_segmentation_set,
    check_sizes,
    hold_out_images,
)

STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_voc_reader_palette_and_aug_labels(tmp_path):
    voc = make_voc(tmp_path, train=3, val=2)
    val = build_segmentation_set("voc2012", str(voc.parent), "val")  # VOCdevkit works too
    train_aug = build_segmentation_set("voc2012", str(voc), "train_aug")
    assert (len(val), len(train_aug), val.num_classes) == (2, 3, 21)
    assert all(p.parent.name == "SegmentationClassAug" for p in train_aug.labels)
    image, label = val.load(0)
    assert image.dtype == torch.uint8 and image.shape[0] == 3
    assert label.shape == image.shape[1:] and label.dtype == torch.int64
    raw = np.asarray(Image.open(val.labels[0]))  # palette indices, as stored
    assert Image.open(val.labels[0]).mode == "P"
    assert torch.equal(label, torch.from_numpy(raw.astype(np.int64)))
    assert set(label.unique().tolist()) <= set(range(21)) | {IGNORE} and IGNORE in label


def test_ade20k_reduce_zero_label(tmp_path):
    ade = make_ade20k(tmp_path, train=2, val=1)
    val = build_segmentation_set("ade20k", str(ade), "val")
    _, label = val.load(0)
    raw = torch.from_numpy(np.asarray(Image.open(val.labels[0])).astype(np.int64))
    assert torch.equal(label[raw == 0], torch.full_like(label[raw == 0], IGNORE))
    assert torch.equal(label[raw > 0], raw[raw > 0] - 1) and val.num_classes == 150


def test_train_view_is_seeded_joint_and_padded_with_ignore():
    image = torch.arange(3 * 20 * 30, dtype=torch.float32).reshape(3, 20, 30).to(torch.uint8)
    label = torch.zeros(20, 30, dtype=torch.int64)
    label[:, 15:] = 1  # right half class 1
    aug = Augmentation(crop=48, scale_range=(0.5, 2.0), base_size=None, mean=STATS[0], std=STATS[1])
    view_a, crop_a = train_view(image, label, aug, seed=7)
    view_b, crop_b = train_view(image, label, aug, seed=7)
    assert view_a.shape == (3, 48, 48) and crop_a.shape == (48, 48)
    assert torch.equal(view_a, view_b) and torch.equal(crop_a, crop_b)  # same seed, same draw
    assert (crop_a == IGNORE).any()  # a 20x30 image at <= 2x is padded to 48
    padded = crop_a == IGNORE
    assert torch.all(view_a[:, padded] == 0)  # padding is the mean colour after normalising


def test_photometric_distortion_keeps_grey_grey_and_is_seeded():
    grey = torch.full((3, 16, 16), 100.0)
    grey[:, 8:] = 180.0
    outputs = [photometric_distortion(grey, torch.Generator().manual_seed(s)) for s in range(12)]
    for out in outputs:
        assert out.shape == grey.shape and out.min() >= 0 and out.max() <= 255
        assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])  # no colour cast
    assert any(not torch.equal(out, grey) for out in outputs)  # it does distort
    again = photometric_distortion(grey, torch.Generator().manual_seed(3))
    assert torch.equal(again, outputs[3])


def test_crop_is_redrawn_while_one_class_dominates():
    label = torch.ones(100, 100, dtype=torch.int64)
    label[:, 30:70] = 2

    def balanced(top, left):
        counts = torch.bincount(label[top : top + 20, left : left + 20].flatten())[1:]
        return bool((counts > 0).all() and counts.max() / counts.sum() < 0.75)

    redrawn = 0
    for seed in range(8):
        plain = torch.Generator().manual_seed(seed)  # one draw per call with ratio 1.0
        draws = [crop_window(label, 20, 1.0, plain) for _ in range(10)]
        expected = next((d for d in draws if balanced(*d)), draws[-1])  # mmseg: <= 10 draws
        assert crop_window(label, 20, 0.75, torch.Generator().manual_seed(seed)) == expected
        redrawn += expected != draws[0]
    assert redrawn > 0
    assert crop_window(label[:10, :10], 20, 0.75, torch.Generator()) == (0, 0)  # small image


def test_hold_out_images_is_disjoint_and_seeded(tmp_path):
    train = build_segmentation_set("voc2012", str(make_voc(tmp_path, train=6, val=1)), "train_aug")
    rest, held = hold_out_images(train, 2)
    assert len(held) == 2 and len(rest) == 4 and not set(rest.ids) & set(held.ids)
    assert hold_out_images(train, 2)[1].ids == held.ids and held.split == "heldout-2"


def test_voc_without_imagesets_is_refused(tmp_path):
    voc = make_voc(tmp_path, train=1, val=1)
    (voc / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(DataError, match="val.txt does not exist"):
        build_segmentation_set("voc2012", str(voc), "val")
    for path in sorted((voc / "ImageSets").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (voc / "ImageSets").rmdir()
    with pytest.raises(DataError, match="has no ImageSets/Segmentation"):
        build_segmentation_set("voc2012", str(voc), "train_aug")


def test_label_of_another_size_is_refused(tmp_path):
    voc = make_voc(tmp_path, train=2, val=1)
    val = build_segmentation_set("voc2012", str(voc), "val")
    Image.new("P", (7, 9)).save(val.labels[0])
    with pytest.raises(DataError, match=r"is 7x9 px but its image is"):
        check_sizes(val)
    with pytest.raises(DataError, match=val.ids[0]):
        val.load(0)


def test_missing_files_and_unknown_splits_are_refused(tmp_path):
    voc = make_voc(tmp_path, train=2, val=1)
    (voc / "JPEGImages" / "2007_000000.jpg").unlink()
    with pytest.raises(DataError, match="1 files of voc2012/train_aug are missing"):
        build_segmentation_set("voc2012", str(voc), "train_aug")
    with pytest.raises(DataError, match="unknown VOC2012 split"):
        build_segmentation_set("voc2012", str(voc), "test")
    with pytest.raises(DataError, match="no images/training"):
        build_segmentation_set("ade20k", str(voc), "train")
