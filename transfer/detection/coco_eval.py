"""COCO box and mask AP with pycocotools' COCOeval, from per-image predictions.

The reference evaluation of COCO (Lin et al. 2014; detectron2's COCOEvaluator calls the same
COCOeval): AP = mean over IoU 0.50:0.05:0.95 and 101 recall points, AP50, AP75, all areas, at most
100 detections per image; crowd regions are matched as "ignore". Results are in percent.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def coco_results(
    predictions: list[dict], image_ids: list[int], category_ids: list[int]
) -> list[dict]:
    """COCO result entries (bbox x y w h, score, category_id[, RLE segmentation]).

    predictions[i] belongs to image_ids[i] and holds numpy "boxes" [N, 4] (x0 y0 x1 y1),
    "labels" [N] in 1..K (category_ids[label - 1]), "scores" [N] and optionally "masks" [N, H, W]
    (bool, the image's size).
    """
    results = []
    for image_id, prediction in zip(image_ids, predictions, strict=True):
        masks = prediction.get("masks")
        for n, (box, label, score) in enumerate(
            zip(prediction["boxes"], prediction["labels"], prediction["scores"])
        ):
            x0, y0, x1, y1 = (float(v) for v in box)
            entry = {
                "image_id": int(image_id),
                "category_id": int(category_ids[int(label) - 1]),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "score": float(score),
            }
            if masks is not None:
                rle = mask_util.encode(np.asfortranarray(masks[n].astype(np.uint8)))
                rle["counts"] = rle["counts"].decode("ascii")
                entry["segmentation"] = rle
            results.append(entry)
    return results


def coco_metrics(coco: COCO, results: list[dict], with_masks: bool) -> dict[str, float]:
    """{"ap", "ap50", "ap75"} of boxes (+ "mask_ap", "mask_ap50", "mask_ap75"), in percent."""
    kinds = [("bbox", "")] + ([("segm", "mask_")] if with_masks else [])
    if not results:  # nothing detected: COCO's loadRes refuses an empty list
        return {f"{prefix}{name}": 0.0 for _, prefix in kinds for name in ("ap", "ap50", "ap75")}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its tables
        detections = coco.loadRes(results)
    metrics = {}
    for iou_type, prefix in kinds:
        evaluator = COCOeval(coco, detections, iou_type)
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        stats = evaluator.stats[:3]  # AP, AP50, AP75 over all areas, 100 detections
        for name, value in zip(("ap", "ap50", "ap75"), stats):
            metrics[f"{prefix}{name}"] = 100.0 * max(float(value), 0.0)  # -1: no ground truth
    return metrics
