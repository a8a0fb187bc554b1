"""Detection readers in the data sets' own layouts: PASCAL VOC (XML + ImageSets) and COCO (JSON).

    VOC    <data>/VOC2007/{Annotations/<id>.xml, ImageSets/Main/<set>.txt, JPEGImages/<id>.jpg}
           (and VOC2012/ beside it for VOC07+12), i.e. --data is the VOCdevkit directory
    COCO   <data>/annotations/instances_<split>.json, <data>/<split>/<file_name>

Items are (image [3, H, W] float in [0, 1], target) with target = {"boxes" [N, 4] float32
x0 y0 x1 y1, "labels" [N] int64 in 1..K (0 is background), "image_id" int, and "difficult" [N] bool
(VOC) or "masks" [N, H, W] uint8 (COCO with masks)}.

VOC boxes follow detectron2's reader (detectron2/data/datasets/pascal_voc.py): the XML's 1-based
inclusive pixel indices become continuous coordinates by xmin - 1, ymin - 1; "difficult" objects are
kept for training (as detectron2 does) and ignored by the evaluation (voc_eval.py).
COCO follows torchvision's references/detection and detectron2: crowd regions and empty boxes are
not training targets; training skips images without any target (detectron2's
DATALOADER.FILTER_EMPTY_ANNOTATIONS); category ids map to contiguous labels in sorted id order.
Bad layouts raise DataError naming the missing file and what --data should be.
"""

from __future__ import annotations

import contextlib
import io
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor

from pretrain.data import DataError

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
VOC_LAYOUT = "VOC<year>/{Annotations, ImageSets/Main, JPEGImages}"


def read_image(path: Path) -> torch.Tensor:
    """RGB image [3, H, W] float32 in [0, 1]."""
    try:
        with Image.open(path) as image:
            return pil_to_tensor(image.convert("RGB")).float().div_(255.0)
    except OSError as error:
        raise DataError(f"cannot read image {path} ({error})") from error


class VocDetection(Dataset):
    """PASCAL VOC detection over one or more (year, image set) pairs, e.g. [("2007", "trainval"),
    ("2012", "trainval")] for VOC07+12; class labels 1..20 in VOC_CLASSES order."""

    classes = VOC_CLASSES

    def __init__(self, root: str | Path, splits: list[tuple[str, str]]) -> None:
        self.root = Path(root)
        self.items: list[tuple[Path, dict]] = []
        for year, image_set in splits:
            year_dir = self.root / f"VOC{year}"
            listing = year_dir / "ImageSets" / "Main" / f"{image_set}.txt"
            if not listing.is_file():
                raise DataError(
                    f"{listing} does not exist; --data must be a VOCdevkit directory holding "
                    f"{VOC_LAYOUT} with the image-set file ImageSets/Main/{image_set}.txt"
                )
            ids = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
            if not ids:
                raise DataError(f"{listing} lists no images")
            for image_id in ids:
                target = parse_voc_xml(year_dir / "Annotations" / f"{image_id}.xml")
                target["image_id"] = len(self.items)
                self.items.append((year_dir / "JPEGImages" / f"{image_id}.jpg", target))
        self.name = "+".join(f"voc{year[2:]}-{image_set}" for year, image_set in splits)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        path, target = self.items[index]
        return read_image(path), {key: _copy(value) for key, value in target.items()}


def _copy(value):
    return value.clone() if isinstance(value, torch.Tensor) else value


def parse_voc_xml(path: Path) -> dict:
    """{"boxes" [N, 4] (continuous: xmin - 1, ymin - 1, xmax, ymax), "labels", "difficult"}."""
    if not path.is_file():
        raise DataError(f"annotation {path} does not exist (every listed image needs one)")
    try:
        tree = ElementTree.parse(path)
    except ElementTree.ParseError as error:
        raise DataError(f"{path} is not valid XML ({error})") from error
    boxes, labels, difficult = [], [], []
    for obj in tree.findall("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in VOC_CLASSES:
            raise DataError(f"{path}: unknown class {name!r}; VOC classes are {VOC_CLASSES}")
        box = obj.find("bndbox")
        if box is None:
            raise DataError(f"{path}: object {name!r} without a bndbox")
        x0, y0, x1, y1 = (float(box.findtext(tag)) for tag in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append([x0 - 1.0, y0 - 1.0, x1, y1])
        labels.append(VOC_CLASSES.index(name) + 1)
        difficult.append(int(obj.findtext("difficult") or 0) == 1)
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "difficult": torch.tensor(difficult, dtype=torch.bool),
    }


class CocoDetection(Dataset):
    """COCO instances of `split` (e.g. train2017, val2017); masks when `with_masks`.

    `train=True` drops crowd regions and empty boxes from the targets and images left without
    targets; `train=False` keeps every image (the evaluation reads the JSON itself, crowd included).
    """

    def __init__(self, root: str | Path, split: str, *, with_masks: bool, train: bool) -> None:
        from pycocotools.coco import COCO

        self.root = Path(root)
        self.annotation_file = self.root / "annotations" / f"instances_{split}.json"
        self.image_dir = self.root / split
        if not self.annotation_file.is_file():
            raise DataError(
                f"{self.annotation_file} does not exist; --data must be a COCO directory holding "
                f"annotations/instances_{split}.json and {split}/ with the images"
            )
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            try:
                self.coco = COCO(str(self.annotation_file))
            except (OSError, ValueError, KeyError, TypeError) as error:
                raise DataError(f"{self.annotation_file} is not a COCO file ({error})") from error
        check_coco_json(self.coco.dataset, self.annotation_file)
        self.category_ids = sorted(self.coco.getCatIds())  # label k <-> category_ids[k - 1]
        self.classes = tuple(self.coco.cats[c]["name"] for c in self.category_ids)
        self.with_masks, self.train = with_masks, train
        self.image_ids = sorted(self.coco.getImgIds())
        if train:
            self.image_ids = [i for i in self.image_ids if self._annotations(i)]
        if not self.image_ids:
            raise DataError(f"{self.annotation_file} has no usable images")
        self.name = f"coco-{split}"

    def _annotations(self, image_id: int) -> list[dict]:
        annotations = self.coco.imgToAnns.get(image_id, [])
        if not self.train:
            return [a for a in annotations if not a.get("iscrowd", 0)]
        return [
            a
            for a in annotations
            if not a.get("iscrowd", 0) and a["bbox"][2] > 1e-3 and a["bbox"][3] > 1e-3
        ]

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        image = read_image(self.image_dir / info["file_name"])
        annotations = self._annotations(image_id)
        boxes = torch.tensor([a["bbox"] for a in annotations], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # x y w h -> x0 y0 x1 y1
        labels = [self.category_ids.index(a["category_id"]) + 1 for a in annotations]
        target = {"boxes": boxes, "labels": torch.tensor(labels, dtype=torch.int64)}
        target["image_id"] = image_id
        if self.with_masks:
            masks = [self.coco.annToMask(a) for a in annotations]
            height, width = image.shape[-2:]
            stacked = np.stack(masks) if masks else np.zeros((0, height, width), np.uint8)
            target["masks"] = torch.from_numpy(stacked)
        return image, target


def check_coco_json(data: dict, path: Path) -> None:
    """Refuse COCO instances `data` (read from `path`) whose annotations name images or
    categories it does not define."""
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path} has no '{key}' list; it is not a COCO instances file")
    categories = {c["id"] for c in data["categories"]}
    images = {i["id"] for i in data["images"]}
    unknown = sorted({a["category_id"] for a in data["annotations"]} - categories)
    if unknown:
        raise DataError(
            f"{path}: annotations use category ids {unknown[:10]} that are not in its "
            f"'categories' (known ids: {sorted(categories)[:20]})"
        )
    orphans = sorted({a["image_id"] for a in data["annotations"]} - images)
    if orphans:
        raise DataError(f"{path}: annotations refer to image ids {orphans[:10]} not in 'images'")
