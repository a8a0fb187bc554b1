"""Detection metrics: a VOC07 11-point AP worked out by hand, and ground truth given as
predictions scoring AP = AP50 = 100 (VOC boxes, COCO boxes and masks through pycocotools)."""

import numpy as np
import pytest

from tests.transfer.detection.layouts import make_coco, make_voc
from transfer.detection.coco_eval import coco_metrics, coco_results
from transfer.detection.data import CocoDetection, VocDetection
from transfer.detection.voc_eval import (
    Detections,
    GroundTruth,
    ap50_interval,
    class_ap,
    voc_ap,
    voc_detection_metrics,
)


def _hand_made_case():
    """One class (label 1), two images.

    image 0: objects A [0, 0, 10, 10] and B [20, 20, 30, 30]
    image 1: object C [0, 0, 10, 10] and a difficult object D [40, 40, 50, 50]
    detections by score: d1 = A (0.9, TP), d2 = [60, 60, 70, 70] in image 1 (0.8, FP: no overlap),
    d3 = D (0.75, difficult: ignored), d4 = A again (0.7, FP: duplicate), d5 = C (0.6, TP),
    d6 = a box of label 2 over B (0.95, another class: not counted for label 1).
    """
    ground_truth = [
        GroundTruth(
            np.array([[0, 0, 10, 10], [20, 20, 30, 30.0]]),
            np.array([1, 1]),
            np.array([False, False]),
        ),
        GroundTruth(
            np.array([[0, 0, 10, 10], [40, 40, 50, 50.0]]),
            np.array([1, 1]),
            np.array([False, True]),
        ),
    ]
    detections = [
        Detections(
            np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30.0]]),
            np.array([1, 1, 2]),
            np.array([0.9, 0.7, 0.95]),
        ),
        Detections(
            np.array([[60, 60, 70, 70], [40, 40, 50, 50], [0.5, 0, 10, 10]]),
            np.array([1, 1, 1]),
            np.array([0.8, 0.75, 0.6]),
        ),
    ]
    return detections, ground_truth


def test_voc07_11_point_ap_of_a_hand_made_case():
    detections, ground_truth = _hand_made_case()
    # 3 non-difficult positives (A, B, C). Counted detections in score order: d1 TP, d2 FP,
    # d4 FP, d5 TP (d3 is on a difficult object: skipped). Cumulative:
    #   recall    1/3, 1/3, 1/3, 2/3      precision 1, 1/2, 1/3, 1/2
    # 11-point: r = 0, 0.1, 0.2, 0.3 -> max precision at recall >= r = 1;
    #           r = 0.4, 0.5, 0.6 -> 1/2 (only the last point has recall >= 0.4);
    #           r = 0.7 ... 1.0 -> 0 (recall never reaches 0.7).
    by_hand = (4 * 1.0 + 3 * 0.5 + 4 * 0.0) / 11
    assert class_ap(detections, ground_truth, 1, 0.5, use_07_metric=True) == pytest.approx(by_hand)
    # area under the envelope: 1/3 x 1 + 1/3 x 1/2 + 1/3 x 0
    area = 1 / 3 + 1 / 6
    assert class_ap(detections, ground_truth, 1, 0.5, use_07_metric=False) == pytest.approx(area)
    # d5 ([0.5, 0, 10, 10] on C) has IoU 0.95: a true positive at 0.9, a false one at 0.96
    assert class_ap(detections, ground_truth, 1, 0.96, True) == pytest.approx((1 + 1 + 1 + 1) / 11)


def test_voc_ap_formulas_on_a_curve():
    recall = np.array([0.2, 0.4, 0.4, 0.8])
    precision = np.array([1.0, 1.0, 0.5, 0.6])
    # 11-point: r <= 0.4 (5 points) -> 1.0; 0.5 ... 0.8 (4 points) -> 0.6; 0.9, 1.0 -> 0
    assert voc_ap(recall, precision, True) == pytest.approx((5 * 1.0 + 4 * 0.6) / 11)
    assert voc_ap(recall, precision, False) == pytest.approx(0.4 * 1.0 + 0.4 * 0.6)


def test_voc_ground_truth_as_predictions_scores_100(tmp_path):
    root = make_voc(tmp_path / "VOCdevkit", {("2007", "test"): 6})
    test_set = VocDetection(root, [("2007", "test")])
    ground_truth, detections = [], []
    for _, target in test_set.items:
        boxes, labels = target["boxes"].numpy(), target["labels"].numpy()
        ground_truth.append(GroundTruth(boxes, labels, target["difficult"].numpy()))
        detections.append(Detections(boxes, labels, np.ones(len(labels))))
    metrics, details = voc_detection_metrics(detections, ground_truth, 20)
    assert metrics == {"ap50": 100.0, "ap75": 100.0, "ap": 100.0}
    assert sorted(i for i, ap in enumerate(details["ap50_per_class"]) if ap is not None) == [
        7,  # cat
        11,  # dog
        14,  # person
    ]


def test_coco_ground_truth_as_predictions_scores_100_boxes_and_masks(tmp_path):
    make_coco(tmp_path, "val2017", 5)
    val = CocoDetection(tmp_path, "val2017", with_masks=True, train=False)
    predictions = []
    for index in range(len(val)):
        _, target = val[index]
        count = len(target["labels"])
        predictions.append(
            {
                "boxes": target["boxes"].numpy(),
                "labels": target["labels"].numpy(),
                "scores": np.linspace(1.0, 0.5, count),
                "masks": target["masks"].numpy().astype(bool),
            }
        )
    results = coco_results(predictions, val.image_ids, val.category_ids)
    assert {r["category_id"] for r in results} == {3, 7}  # original (non-contiguous) ids
    metrics = coco_metrics(val.coco, results, with_masks=True)
    assert metrics["ap"] == pytest.approx(100.0) and metrics["ap50"] == pytest.approx(100.0)
    assert metrics["mask_ap"] == pytest.approx(100.0)
    assert metrics["mask_ap50"] == pytest.approx(100.0)
    # a shifted box no longer counts at IoU 0.75 but still at 0.5
    shifted = [dict(p, boxes=p["boxes"] + np.array([3.0, 0.0, 3.0, 0.0])) for p in predictions]
    worse = coco_metrics(val.coco, coco_results(shifted, val.image_ids, val.category_ids), False)
    assert worse["ap50"] == pytest.approx(100.0) and worse["ap"] < 100.0


def random_voc_problem(images: int = 40, seed: int = 0):
    """Ground truth (some difficult) and noisy detections of 3 classes on `images` images."""
    rng = np.random.default_rng(seed)
    ground_truth, detections = [], []
    for _ in range(images):
        count = rng.integers(1, 4)
        corner = rng.uniform(0, 50, (count, 2))
        boxes = np.concatenate([corner, corner + rng.uniform(10, 40, (count, 2))], axis=1)
        labels = rng.integers(1, 4, count)
        ground_truth.append(GroundTruth(boxes, labels, rng.random(count) < 0.1))
        found = rng.integers(0, count, rng.integers(0, 5))
        noisy = boxes[found] + rng.normal(0, 6, (len(found), 4))
        guessed = np.where(
            rng.random(len(found)) < 0.8, labels[found], rng.integers(1, 4, len(found))
        )
        detections.append(Detections(noisy, guessed, rng.random(len(found))))
    return detections, ground_truth


def test_ap50_interval_equals_resampling_whole_images_through_the_evaluator():
    """The interval reweights fixed per-image matches; the reference duplicates the resampled
    images and runs the whole VOC evaluation on each of the 1,000 resamples (same seed)."""
    detections, ground_truth = random_voc_problem()
    low, high = ap50_interval(detections, ground_truth, 3)
    rng, values = np.random.default_rng(0), []
    for _ in range(1000):
        index = rng.integers(0, 40, 40)
        picked = ([detections[i] for i in index], [ground_truth[i] for i in index])
        values.append(voc_detection_metrics(*picked, 3)[0]["ap50"])
    assert (low, high) == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])), abs=1e-6)
    point = voc_detection_metrics(detections, ground_truth, 3)[0]["ap50"]
    assert low < point < high
