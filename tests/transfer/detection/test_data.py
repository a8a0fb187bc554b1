"""VOC and COCO readers on data written in the real layouts, and their answers to bad input
(the CLI's answers: test_cli.py)."""

import json

import pytest
import torch

from pretrain.data import DataError
from results.published import PAPER, published_records
from tests.transfer.detection.layouts import COCO_CATEGORIES, make_coco, make_voc
from transfer.detection import cli as detection
from transfer.detection.data import VOC_CLASSES, CocoDetection, VocDetection
from transfer.detection.protocols import byol_paper_frcnn_c4, moco_detectron2_c4_24k


def test_voc_reader_boxes_labels_difficult(tmp_path):
    root = make_voc(tmp_path, {("2007", "trainval"): 4, ("2012", "trainval"): 2})
    voc = VocDetection(root, [("2007", "trainval"), ("2012", "trainval")])
    assert len(voc) == 6 and voc.name == "voc07-trainval+voc12-trainval"
    image, target = voc[1]
    assert image.shape == (3, 80, 96) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    xml = (tmp_path / "VOC2007" / "Annotations" / "2007_trainval_0001.xml").read_text()
    xmin = int(xml.split("<xmin>")[1].split("<")[0])
    xmax = int(xml.split("<xmax>")[1].split("<")[0])
    # detectron2's convention: 1-based inclusive pixel indices -> continuous, xmin - 1
    assert target["boxes"][0, 0].item() == xmin - 1 and target["boxes"][0, 2].item() == xmax
    first_name = xml.split("<name>")[1].split("<")[0]
    assert target["labels"][0].item() == VOC_CLASSES.index(first_name) + 1
    assert target["difficult"].tolist() == [False, True]  # the layout marks object 2 of image 1


def test_coco_reader_maps_category_ids_and_masks(tmp_path):
    make_coco(tmp_path, "train2017", 4)
    coco = CocoDetection(tmp_path, "train2017", with_masks=True, train=True)
    assert coco.category_ids == [3, 7] and coco.classes == ("car", "train")
    image, target = coco[0]
    annotation = coco.coco.imgToAnns[coco.image_ids[0]][0]
    x, y, w, h = annotation["bbox"]
    assert target["boxes"][0].tolist() == [x, y, x + w, y + h]
    assert target["labels"][0].item() == [3, 7].index(annotation["category_id"]) + 1
    assert target["masks"].shape == (len(target["labels"]), *image.shape[-2:])
    assert target["masks"][0].sum().item() == pytest.approx(w * h, rel=0.15)


def test_coco_training_skips_crowd_and_empty_images(tmp_path):
    path = make_coco(tmp_path, "train2017", 3)
    data = json.loads(path.read_text())
    for annotation in data["annotations"]:
        annotation["iscrowd"] = int(annotation["image_id"] == 100)  # image 100: crowd only
    path.write_text(json.dumps(data))
    train = CocoDetection(tmp_path, "train2017", with_masks=False, train=True)
    assert 100 not in train.image_ids and len(train) == 2
    assert 100 in CocoDetection(tmp_path, "train2017", with_masks=False, train=False).image_ids


def test_voc_without_imagesets_is_refused(tmp_path):
    root = make_voc(tmp_path, {("2007", "trainval"): 2})
    (root / "VOC2007" / "ImageSets" / "Main" / "trainval.txt").unlink()
    with pytest.raises(DataError, match="ImageSets/Main/trainval.txt"):
        VocDetection(root, [("2007", "trainval")])


def test_voc_unknown_class_is_refused(tmp_path):
    root = make_voc(tmp_path, {("2007", "test"): 1})
    xml = root / "VOC2007" / "Annotations" / "2007_test_0000.xml"
    xml.write_text(xml.read_text().replace("<name>cat</name>", "<name>unicorn</name>"))
    with pytest.raises(DataError, match="unknown class 'unicorn'"):
        VocDetection(root, [("2007", "test")])


def test_coco_unknown_category_ids_are_refused(tmp_path):
    path = make_coco(tmp_path, "val2017", 2)
    data = json.loads(path.read_text())
    data["annotations"][0]["category_id"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"category ids \[99\]"):
        CocoDetection(tmp_path, "val2017", with_masks=False, train=False)
    path.write_text("{not json")
    with pytest.raises(DataError, match="is not a COCO file"):
        CocoDetection(tmp_path, "val2017", with_masks=False, train=False)
    assert {c["id"] for c in COCO_CATEGORIES} == {3, 7}


def test_protocol_names_pair_with_the_published_records():
    published = [
        r.task
        for r in published_records()
        if r.task.family == "detection" and r.checkpoint.source == PAPER  # BYOL's, not SelfPatch's
    ]
    protocol, changed = detection.resolve_protocol(detection.DetectionConfig(ckpt="x"))
    assert not changed and protocol.name == "byol-paper-frcnn-c4/1"
    assert all(
        (t.dataset, t.split, t.protocol) == ("voc07", "test", protocol.name) for t in published
    )
    moco, _ = detection.resolve_protocol(
        detection.DetectionConfig(ckpt="x", protocol="moco-detectron2-c4-24k/1", norm="syncbn")
    )
    assert moco.name == "moco-detectron2-c4-24k/1"  # the preset's own value is no override


def test_lr_schedule_is_detectron2_warmup_multistep():
    moco = moco_detectron2_c4_24k()
    assert moco.lr(0) == pytest.approx(0.02 * 0.001)
    assert moco.lr(50) == pytest.approx(0.02 * (0.001 * 0.5 + 0.5))
    assert moco.lr(100) == pytest.approx(0.02) and moco.lr(17_999) == pytest.approx(0.02)
    assert moco.lr(18_000) == pytest.approx(0.002) and moco.lr(22_000) == pytest.approx(2e-4)
    paper = byol_paper_frcnn_c4()  # BYOL v3 App. D.5: 1e-3, 1e-4 at 1M, 1e-5 at 1.2M, 1.5M steps
    assert [paper.lr(i) for i in (0, 999_999, 1_000_000, 1_200_000)] == pytest.approx(
        [1e-3, 1e-3, 1e-4, 1e-5]
    )
    assert paper.max_iters == 1_500_000 and moco.max_iters == 24_000 and moco.batch_size == 16
