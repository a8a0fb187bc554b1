"""Miniature copies of the 12 transfer releases, written to disk in their creators' formats.

`write_miniature(name, root)` writes root/FOLDER_NAMES[name] with the release's own layout: tiny
JPEGs (PIL), the real text split files, .mat files through scipy.io.savemat with the creators'
struct layout (Cars: `annotations` [1, N] struct array, `class_names` [1, K] cell; Flowers:
`labels` [1, N], `trnid`/`valid`/`tstid` [1, n]) and CIFAR pickles with the real byte keys.
Class names are the real first few of each data set (then `extra...` names).
"""

from __future__ import annotations

import pickle
import zlib
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from transfer.classification.releases import CALTECH_TRAIN_PER_CLASS, FOLDER_NAMES

CLASS_NAMES = {  # the first classes of each release, in its own order
    "food101": ["apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio"],
    "cifar10": ["airplane", "automobile", "bird", "cat"],
    "cifar100": ["apple", "aquarium_fish", "baby", "bear"],
    "birdsnap": [
        "Acadian Flycatcher",
        "Acorn Woodpecker",
        "Alder Flycatcher",
        "Allens Hummingbird",
    ],
    "sun397": [
        "/a/abbey",
        "/a/airport_terminal",
        "/a/apartment_building/outdoor",
        "/b/bakery/shop",
    ],
    "cars": [
        "AM General Hummer SUV 2000",
        "Acura RL Sedan 2012",
        "Acura TL Sedan 2012",
        "Acura TL Type-S 2008",
    ],
    "aircraft": ["707-320", "Cessna 172", "DHC-8-100", "Falcon 2000"],
    "voc2007": ["aeroplane", "bicycle", "bird", "boat"],
    "dtd": ["banded", "blotchy", "braided", "bubbly"],
    "pets": ["Abyssinian", "american_bulldog", "american_pit_bull_terrier", "basset_hound"],
    "caltech101": ["BACKGROUND_Google", "Faces", "accordion", "airplanes"],
    "flowers": ["1", "2", "3", "4"],
}
VOC_CLASSES = (  # the devkit's VOCopts.classes
    "aeroplane bicycle bird boat bottle bus car cat chair cow diningtable dog horse motorbike "
    "person pottedplant sheep sofa train tvmonitor"
).split()


_EXTRA_NAMES = {
    "sun397": "/e/extra_class_{}",
    "aircraft": "Extra Variant {}",
    "cars": "Extra Car {}",
}


def class_names(name: str, count: int) -> list[str]:
    """The `count` class names a miniature of `name` uses (as the release's class list has them)."""
    if name == "voc2007":
        return VOC_CLASSES[:count]
    if name == "flowers":
        return [str(k) for k in range(1, count + 1)]
    pattern = _EXTRA_NAMES.get(name, "extra_class_{}")
    names = CLASS_NAMES[name][:count]
    return names + [pattern.format(k) for k in range(len(names), count)]


def write_jpeg(path: Path, size: int) -> None:
    """A random size x size RGB JPEG, its pixels seeded by the path's name."""
    rng = np.random.default_rng(zlib.crc32(str(path).encode()))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path, "JPEG")


def write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def voc_row(position: int, label: int, count: int) -> list[int]:
    """The miniature VOC labels of the image at `position` of a split whose main class is
    `label`: 1 for it, plus a difficult (0) second class every 3rd image and a second positive
    every 4th; every 5th image shows its class only as difficult objects (0, no 1 at all)."""
    row = [-1] * count
    if position % 5 == 4:
        row[label] = 0
        return row
    row[label] = 1
    if position % 3 == 1 and count > 1:
        row[(label + 1) % count] = 0
    if position % 4 == 2 and count > 2:
        row[(label + 2) % count] = 1
    return row


def write_miniature(
    name: str, root: Path, *, classes: int = 3, per_class: int = 4, image_size: int = 8
) -> Path:
    """A miniature of release `name` in root/FOLDER_NAMES[name] (returned; pass it, or `root`,
    as --data): `classes` classes with `per_class` images each in every split the release has
    (Caltech-101: 30 + per_class per class, as its protocol draws 30 for train)."""
    folder = Path(root) / FOLDER_NAMES[name]
    names = class_names(name, classes)
    _WRITERS[name](folder, names, per_class, image_size)
    return folder


def _food101(folder: Path, names: list[str], per_class: int, size: int) -> None:
    write_lines(folder / "meta" / "classes.txt", names)
    write_lines(folder / "meta" / "labels.txt", [n.replace("_", " ").title() for n in names])
    for offset, split in enumerate(("train", "test")):
        entries = [
            f"{c}/{100000 * (k + 1) + 10 * i + offset}"
            for k, c in enumerate(names)
            for i in range(per_class)
        ]
        write_lines(folder / "meta" / f"{split}.txt", entries)
        for entry in entries:
            write_jpeg(folder / "images" / f"{entry}.jpg", size)


def _cifar(folder: Path, names: list[str], per_class: int, size: int) -> None:
    ten = folder.name == FOLDER_NAMES["cifar10"]
    label_key = b"labels" if ten else b"fine_labels"
    files = [f"data_batch_{i}" for i in range(1, 6)] if ten else ["train"]
    rng = np.random.default_rng(len(names))
    folder.mkdir(parents=True, exist_ok=True)
    for split_files in (files, ["test_batch" if ten else "test"]):
        labels = [k for k in range(len(names)) for _ in range(per_class)]
        for index, file in enumerate(split_files):
            chosen = labels[index :: len(split_files)]  # round-robin over the batches
            batch = {
                b"batch_label": file.encode(),
                label_key: chosen,
                b"data": rng.integers(0, 256, (len(chosen), 3072), dtype=np.uint8),
                b"filenames": [f"img_{i}.png".encode() for i in range(len(chosen))],
            }
            if not ten:
                batch[b"coarse_labels"] = [0] * len(chosen)
            (folder / file).write_bytes(pickle.dumps(batch))
    meta = (
        {b"label_names": [n.encode() for n in names]}
        if ten
        else {
            b"fine_label_names": [n.encode() for n in names],
            b"coarse_label_names": [b"fruit_and_vegetables"],
        }
    )
    (folder / ("batches.meta" if ten else "meta")).write_bytes(pickle.dumps(meta))


_PARTS = (
    "back beak belly breast crown forehead left_cheek left_eye left_leg left_wing nape "
    "right_cheek right_eye right_leg right_wing tail throat"
).split()


def _birdsnap(folder: Path, names: list[str], per_class: int, size: int) -> None:
    dirs = [n.replace(" ", "_") for n in names]
    species = ["id\tcommon\tscientific\tdir"]
    species += [f"{k + 1}\t{n}\tGenus species{k}\t{d}" for k, (n, d) in enumerate(zip(names, dirs))]
    write_lines(folder / "species.txt", species)
    header = "url\tmd5\tpath\tspecies_id\tbb_x1\tbb_y1\tbb_x2\tbb_y2\t"
    header += "\t".join(f"{part}_{axis}" for part in _PARTS for axis in "xy")
    rows, test_paths, number = [header], ["path"], 0
    for k, d in enumerate(dirs):
        for i in range(2 * per_class):
            number += 1
            path = f"{d}/{number:04d}.jpg"
            parts = "\t".join(["1"] * 2 * len(_PARTS))
            url = f"http://farm{k}.staticflickr.com/{number}.jpg"
            rows.append(f"{url}\t{number:032x}\t{path}\t{k + 1}\t1\t1\t{size}\t{size}\t{parts}")
            if i % 2:  # every other image is a test image
                test_paths.append(path)
            write_jpeg(folder / "download" / "images" / path, size)
    write_lines(folder / "images.txt", rows)
    write_lines(folder / "test_images.txt", test_paths)


def _sun397(folder: Path, names: list[str], per_class: int, size: int) -> None:
    write_lines(folder / "ClassName.txt", names)
    for offset, stem in enumerate(("Training_01", "Testing_01")):
        entries = []
        for k, key in enumerate(names):
            for i in range(per_class):
                letters = "".join(chr(97 + (k * 7 + i * 3 + offset + j) % 26) for j in range(16))
                entries.append(f"{key}/sun_{letters}.jpg")
        write_lines(folder / f"{stem}.txt", entries)
        for entry in entries:
            write_jpeg(folder / entry.lstrip("/"), size)


def _cars(folder: Path, names: list[str], per_class: int, size: int) -> None:
    devkit = folder / "devkit"
    devkit.mkdir(parents=True, exist_ok=True)
    class_names_cell = np.array(names, dtype=object).reshape(1, -1)  # a [1, K] cell of strings
    scipy.io.savemat(devkit / "cars_meta.mat", {"class_names": class_names_cell})
    for split, annotation_files in (
        ("train", [devkit / "cars_train_annos.mat"]),
        ("test", [devkit / "cars_test_annos.mat", folder / "cars_test_annos_withlabels.mat"]),
    ):
        labels = [k + 1 for i in range(per_class) for k in range(len(names))]  # 1-based, mixed
        fnames = [f"{i + 1:05d}.jpg" for i in range(len(labels))]
        for file in annotation_files:
            with_class = file.name != "cars_test_annos.mat"  # the original test file: no labels
            scipy.io.savemat(file, {"annotations": cars_annotations(fnames, labels, with_class)})
        for fname in fnames:
            write_jpeg(folder / f"cars_{split}" / fname, size)


def cars_annotations(fnames: list[str], labels: list[int], with_class: bool = True) -> np.ndarray:
    """The devkit's `annotations`: a [1, N] struct array, bbox_x1..bbox_y2, class, fname."""
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"] + ["class"] * with_class + ["fname"]
    records = np.zeros((1, len(fnames)), dtype=[(field, object) for field in fields])
    for index, (fname, label) in enumerate(zip(fnames, labels)):
        for field, value in zip(fields[:4], (1, 2, 7, 6)):
            records[0, index][field] = np.array([[value]], dtype=np.uint8)
        if with_class:
            records[0, index]["class"] = np.array([[label]], dtype=np.uint8)
        records[0, index]["fname"] = np.array([fname])
    return records


def _aircraft(folder: Path, names: list[str], per_class: int, size: int) -> None:
    data = folder / "data"
    write_lines(data / "variants.txt", names)
    lists = {}
    for offset, split in enumerate(("train", "val", "test")):
        lists[split] = [
            f"{1000000 + 10000 * k + 10 * i + offset:07d} {v}"
            for k, v in enumerate(names)
            for i in range(per_class)
        ]
        write_lines(data / f"images_variant_{split}.txt", lists[split])
    write_lines(data / "images_variant_trainval.txt", lists["train"] + lists["val"])
    for line in lists["train"] + lists["val"] + lists["test"]:
        write_jpeg(data / "images" / f"{line.split(' ', 1)[0]}.jpg", size)


def _voc2007(folder: Path, names: list[str], per_class: int, size: int) -> None:
    main = folder / "VOC2007" / "ImageSets" / "Main"
    number = 0
    for split in ("train", "val", "test"):
        ids, rows = [], []
        for position in range(len(names) * per_class):
            number += 1
            ids.append(f"{number:06d}")
            rows.append(voc_row(position, position % len(names), len(names)))
            write_jpeg(folder / "VOC2007" / "JPEGImages" / f"{ids[-1]}.jpg", size)
        write_lines(main / f"{split}.txt", ids)
        for k, class_name in enumerate(names):  # the devkit pads 1 to " 1": `000005  1`
            lines = [f"{i} {'' if row[k] < 0 else ' '}{row[k]}" for i, row in zip(ids, rows)]
            write_lines(main / f"{class_name}_{split}.txt", lines)


def _dtd(folder: Path, names: list[str], per_class: int, size: int) -> None:
    for offset, split in enumerate(("train", "val", "test")):
        entries = [f"{c}/{c}_{3 * i + offset + 1:04d}.jpg" for c in names for i in range(per_class)]
        write_lines(folder / "labels" / f"{split}1.txt", entries)
        for entry in entries:
            write_jpeg(folder / "images" / entry, size)


def _pets(folder: Path, names: list[str], per_class: int, size: int) -> None:
    lists = {}
    for offset, split in enumerate(("trainval", "test")):
        lists[split] = []
        for k, breed in enumerate(names):
            species = 1 if breed[0].isupper() else 2  # capitalised breeds are cats
            for i in range(per_class):
                image_id = f"{breed}_{2 * i + offset + 1}"
                lists[split].append(f"{image_id} {k + 1} {species} {k + 1}")
                write_jpeg(folder / "images" / f"{image_id}.jpg", size)
        write_lines(folder / "annotations" / f"{split}.txt", lists[split])
    comments = ["#Image CLASS-ID SPECIES BREED ID", "#ID: 1:37 Class ids"]
    write_lines(folder / "annotations" / "list.txt", comments + lists["trainval"] + lists["test"])


def _caltech101(folder: Path, names: list[str], per_class: int, size: int) -> None:
    for class_name in names:
        for i in range(CALTECH_TRAIN_PER_CLASS + per_class):
            write_jpeg(folder / class_name / f"image_{i + 1:04d}.jpg", size)


def _flowers(folder: Path, names: list[str], per_class: int, size: int) -> None:
    count = 3 * per_class * len(names)
    labels = np.array([k + 1 for _ in range(3 * per_class) for k in range(len(names))])
    order = np.random.default_rng(0).permutation(count)  # image ids are not grouped by class
    labels = labels[order]
    folder.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(folder / "imagelabels.mat", {"labels": labels.astype(np.uint8)[None, :]})
    ids = {}
    for split_index, key in enumerate(("trnid", "valid", "tstid")):
        chosen = [
            image_id
            for k in range(len(names))
            for image_id in (np.flatnonzero(labels == k + 1) + 1)[split_index::3]
        ]
        ids[key] = np.array(sorted(chosen), dtype=np.uint16)[None, :]  # [1, n], 1-based
    scipy.io.savemat(folder / "setid.mat", ids)
    for image_id in range(1, count + 1):
        write_jpeg(folder / "jpg" / f"image_{image_id:05d}.jpg", size)


_WRITERS = {
    "food101": _food101,
    "cifar10": _cifar,
    "cifar100": _cifar,
    "birdsnap": _birdsnap,
    "sun397": _sun397,
    "cars": _cars,
    "aircraft": _aircraft,
    "voc2007": _voc2007,
    "dtd": _dtd,
    "pets": _pets,
    "caltech101": _caltech101,
    "flowers": _flowers,
}
