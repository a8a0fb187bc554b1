"""PASCAL VOC detection AP: the VOC2007 11-point metric and the area (VOC2010+) metric.

The same computation as the VOC devkit and detectron2's `PascalVOCDetectionEvaluator`
(detectron2/evaluation/pascal_voc_evaluation.py, after R. Girshick's py-faster-rcnn voc_eval.py):
per class, detections of all test images sorted by score, greedy matching to the not yet matched
ground-truth box of highest IoU >= threshold in the same image; "difficult" ground truth is neither
a true nor a false positive and does not count in the recall's denominator.

Coordinates: boxes are continuous [x0, y0, x1, y1] with x0 = xmin - 1 of the 1-based inclusive VOC
XML (data.py), so the devkit's "+1" widths are plain widths here: IoU is identical.

detectron2 reports for VOC2007 test the 11-point metric (`use_07_metric = year == 2007`): AP50 at
IoU 0.5, AP75 at 0.75 and AP = the mean over IoU 0.50:0.05:0.95. `voc_detection_metrics` returns
the same three, in percent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from results import bootstrap

IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.50 ... 0.95


@dataclass(frozen=True)
class GroundTruth:
    """The annotated objects of one image: boxes [N, 4], labels [N], difficult [N] (bool)."""

    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray


@dataclass(frozen=True)
class Detections:
    """The detections of one image: boxes [M, 4], labels [M], scores [M]."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
    """AP from a precision/recall curve, in [0, 1].

    VOC2007 (`use_07_metric`): mean over recall r in {0, 0.1, ..., 1} of the maximum precision at
    recall >= r (0 if none). Otherwise the area under the precision envelope (VOC2010 and later).
    """
    if use_07_metric:
        total = 0.0
        for r in np.linspace(0.0, 1.0, 11):
            reached = precision[recall >= r]
            total += float(reached.max()) if reached.size else 0.0
        return total / 11.0
    recall = np.concatenate(([0.0], recall, [1.0]))
    precision = np.concatenate(([0.0], precision, [0.0]))
    for i in range(precision.size - 1, 0, -1):  # the envelope: precision made monotone
        precision[i - 1] = max(precision[i - 1], precision[i])
    steps = np.where(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box [4] with boxes [N, 4] -> [N] (continuous coordinates)."""
    width = np.clip(np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0]), 0, None)
    height = np.clip(np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1]), 0, None)
    inter = width * height
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, np.finfo(np.float64).eps)


@dataclass(frozen=True)
class ClassMatches:
    """One class's detections of all images in descending score order, each a true or a false
    positive (or neither: a difficult object), and its non-difficult objects per image."""

    images: np.ndarray  # [D] the image of each detection
    true_pos: np.ndarray  # [D] 0/1
    false_pos: np.ndarray  # [D] 0/1
    positives: np.ndarray  # [N images] non-difficult objects of the class


def class_matches(
    detections: list[Detections], ground_truth: list[GroundTruth], label: int, iou_threshold: float
) -> ClassMatches:
    """The greedy matching of the module docstring for class `label`. A detection's outcome
    depends on its own image only, so a resample of images keeps every flag."""
    gt_boxes = [gt.boxes[gt.labels == label] for gt in ground_truth]
    gt_difficult = [gt.difficult[gt.labels == label].astype(bool) for gt in ground_truth]
    positives = np.array([int((~difficult).sum()) for difficult in gt_difficult])
    image_ids, scores, boxes = [], [], []
    for image, det in enumerate(detections):
        keep = det.labels == label
        image_ids += [image] * int(keep.sum())
        scores.append(det.scores[keep])
        boxes.append(det.boxes[keep])
    if not image_ids:
        return ClassMatches(np.zeros(0, dtype=int), np.zeros(0), np.zeros(0), positives)
    order = np.argsort(-np.concatenate(scores), kind="stable")
    boxes_sorted = np.concatenate(boxes)[order]
    images_sorted = np.asarray(image_ids)[order]
    matched = [np.zeros(len(b), dtype=bool) for b in gt_boxes]
    true_pos = np.zeros(len(order))
    false_pos = np.zeros(len(order))
    for d, (image, box) in enumerate(zip(images_sorted, boxes_sorted)):
        candidates = gt_boxes[image]
        if len(candidates) == 0:
            false_pos[d] = 1
            continue
        overlaps = box_iou(box, candidates)
        best = int(np.argmax(overlaps))
        if overlaps[best] <= iou_threshold:  # the devkit's `ovmax > ovthresh` for a match
            false_pos[d] = 1
        elif gt_difficult[image][best]:
            continue  # neither true nor false positive
        elif not matched[image][best]:
            true_pos[d] = 1
            matched[image][best] = True
        else:
            false_pos[d] = 1  # a duplicate of a matched object
    return ClassMatches(images_sorted, true_pos, false_pos, positives)


def matches_ap(matches: ClassMatches, use_07_metric: bool, weights=None) -> float | None:
    """AP of one class's matches, each image counted `weights[image]` times (a bootstrap
    resample; default once); None without positives. Copies of one image's detections share
    their scores, so they count as one step of the precision/recall curve."""
    weights = np.ones(len(matches.positives)) if weights is None else weights
    positives = float(weights @ matches.positives)
    if positives == 0:
        return None
    if len(matches.images) == 0:
        return 0.0
    counted = weights[matches.images]
    true_pos = np.cumsum(matches.true_pos * counted)
    false_pos = np.cumsum(matches.false_pos * counted)
    recall = true_pos / positives
    precision = true_pos / np.maximum(true_pos + false_pos, np.finfo(np.float64).eps)
    return voc_ap(recall, precision, use_07_metric)


def class_ap(
    detections: list[Detections],
    ground_truth: list[GroundTruth],
    label: int,
    iou_threshold: float,
    use_07_metric: bool,
) -> float | None:
    """AP of class `label` over all images (lists aligned by image); None without positives."""
    matches = class_matches(detections, ground_truth, label, iou_threshold)
    return matches_ap(matches, use_07_metric)


def ap50_interval(
    detections: list[Detections],
    ground_truth: list[GroundTruth],
    num_classes: int,
    use_07_metric: bool = True,
) -> tuple[float, float]:
    """95% bootstrap interval (percent) of the mAP at IoU 0.5 over the test images
    (results/bootstrap.py): each resample reweights the images, every class's matches fixed."""
    matches = [class_matches(detections, ground_truth, c, 0.5) for c in range(1, num_classes + 1)]
    count = len(ground_truth)

    def statistic(index: np.ndarray) -> float:
        weights = np.bincount(index, minlength=count).astype(np.float64)
        aps = [matches_ap(one, use_07_metric, weights) for one in matches]
        return float(np.mean([ap for ap in aps if ap is not None]))

    low, high = bootstrap.interval(statistic, count)
    return 100.0 * low, 100.0 * high


def voc_detection_metrics(
    detections: list[Detections],
    ground_truth: list[GroundTruth],
    num_classes: int,
    use_07_metric: bool = True,
) -> tuple[dict[str, float], dict[str, list[float | None]]]:
    """({"ap50", "ap75", "ap"} in percent, per-class AP50 list) over classes 1..num_classes.

    mAP at each IoU threshold is the mean over the classes that have non-difficult ground truth
    (detectron2 averages over all 20 VOC classes, each of which has objects in VOC2007 test).
    """
    if len(detections) != len(ground_truth):
        raise ValueError(f"{len(detections)} detection lists for {len(ground_truth)} images")
    per_threshold = {}
    for threshold in IOU_THRESHOLDS:
        aps = [
            class_ap(detections, ground_truth, label, threshold, use_07_metric)
            for label in range(1, num_classes + 1)
        ]
        per_threshold[threshold] = aps
    means = {
        t: float(np.mean([a for a in aps if a is not None])) for t, aps in per_threshold.items()
    }
    metrics = {
        "ap50": 100.0 * means[0.5],
        "ap75": 100.0 * means[0.75],
        "ap": 100.0 * float(np.mean(list(means.values()))),
    }
    return metrics, {"ap50_per_class": per_threshold[0.5]}
