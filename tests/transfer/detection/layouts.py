"""Tiny detection data sets written to disk in the real layouts: VOCdevkit (XML, ImageSets,
JPEGImages) and COCO (instances JSON with polygon masks, image folder)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from transfer.detection.data import VOC_CLASSES


def _image_with_boxes(rng: np.random.Generator, width: int, height: int, count: int):
    """A noisy image with `count` bright rectangles; returns (PIL image, [(x0, y0, x1, y1)])."""
    pixels = rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8)
    boxes = []
    for _ in range(count):
        w, h = int(rng.integers(16, width // 2)), int(rng.integers(16, height // 2))
        x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        pixels[y0 : y0 + h, x0 : x0 + w] = rng.integers(150, 255, size=3, dtype=np.uint8)
        boxes.append((x0, y0, x0 + w, y0 + h))
    return Image.fromarray(pixels), boxes


def make_voc(
    root: Path,
    sets: dict[tuple[str, str], int],
    *,
    size: tuple[int, int] = (96, 80),
    classes: tuple[str, ...] = ("cat", "dog", "person"),
    seed: int = 0,
) -> Path:
    """VOCdevkit at `root` with {(year, image set): number of images}; returns root."""
    rng = np.random.default_rng(seed)
    for (year, image_set), count in sets.items():
        base = root / f"VOC{year}"
        for folder in ("Annotations", "ImageSets/Main", "JPEGImages"):
            (base / folder).mkdir(parents=True, exist_ok=True)
        ids = [f"{year}_{image_set}_{i:04d}" for i in range(count)]
        for n, image_id in enumerate(ids):
            image, boxes = _image_with_boxes(rng, *size, count=1 + n % 2)
            image.save(base / "JPEGImages" / f"{image_id}.jpg", quality=95)
            objects = "".join(
                f"<object><name>{classes[(n + k) % len(classes)]}</name><pose>Unspecified</pose>"
                f"<truncated>0</truncated><difficult>{int(k == 1 and n % 4 == 1)}</difficult>"
                f"<bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin><xmax>{x1}</xmax>"
                f"<ymax>{y1}</ymax></bndbox></object>"
                for k, (x0, y0, x1, y1) in enumerate(boxes)
            )
            xml = (
                f"<annotation><folder>VOC{year}</folder><filename>{image_id}.jpg</filename>"
                f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth>"
                f"</size><segmented>0</segmented>{objects}</annotation>"
            )
            (base / "Annotations" / f"{image_id}.xml").write_text(xml)
        (base / "ImageSets" / "Main" / f"{image_set}.txt").write_text("\n".join(ids) + "\n")
    assert all(c in VOC_CLASSES for c in classes)
    return root


COCO_CATEGORIES = [{"id": 3, "name": "car"}, {"id": 7, "name": "train"}]  # ids not contiguous


def make_coco(
    root: Path, split: str, count: int, *, size: tuple[int, int] = (96, 80), seed: int = 0
) -> Path:
    """COCO directory at `root` with `count` images in `split`; returns the annotation file."""
    rng = np.random.default_rng(seed)
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for n in range(count):
        image, boxes = _image_with_boxes(rng, *size, count=1 + n % 2)
        name = f"{n:012d}.jpg"
        image.save(root / split / name, quality=95)
        images.append({"id": 100 + n, "file_name": name, "width": size[0], "height": size[1]})
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            polygon = [x0, y0, x1, y0, x1, y1, x0, y1]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": 100 + n,
                    "category_id": COCO_CATEGORIES[(n + k) % 2]["id"],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": float((x1 - x0) * (y1 - y0)),
                    "segmentation": [[float(v) for v in polygon]],
                    "iscrowd": 0,
                }
            )
    path = root / "annotations" / f"instances_{split}.json"
    data = {"images": images, "annotations": annotations, "categories": COCO_CATEGORIES}
    path.write_text(json.dumps(data))
    return path
