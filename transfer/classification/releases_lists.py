"""Readers of the releases whose splits are text lists (read_release in releases.py calls them).

Each reader takes the release folder (resolved by releases.release_folder) and returns
`Splits(train, val, test, notes)` exactly as the creators' split files say; `val` is the
creators' validation list for Aircraft, VOC2007 and DTD, else None (the protocol then holds a
part of train out). Each docstring names the files and their line format.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from pretrain.data import DataError
from transfer.classification.release_files import (
    RELEASE_CONTENTS,
    ImageListDataset,
    Splits,
    VocDataset,
    check_listed,
    missing,
    present,
    read_lines,
    read_raw_lines,
    require,
)

SUN397_PARTITION = 1  # BYOL v3, Table 10: "SUN397 (split 1)"; DTD likewise uses its split 1
DTD_PARTITION = 1


def labels_by_name(
    names: Sequence[str], classes: Sequence[str], list_file: Path, class_file: Path | str
) -> list[int]:
    """The index in `classes` of each class name a split list uses; a name the class list lacks
    is a DataError naming both counts."""
    index = {name: label for label, name in enumerate(classes)}
    unknown = sorted({name for name in names if name not in index})
    if unknown:
        raise DataError(
            f"{list_file} uses {len(set(names))} classes but {class_file} lists {len(classes)}, "
            f"without {unknown[0]!r}; the release is inconsistent: extract it again"
        )
    return [index[name] for name in names]


def read_food101(folder: Path, seed: int) -> Splits:
    """Food-101 (Bossard et al. 2014): meta/classes.txt (the class order), meta/{train,test}.txt
    with lines `<class>/<id>` (750 and 250 per class), images/<class>/<id>.jpg."""
    class_file = folder / "meta" / "classes.txt"
    classes = read_lines(class_file, "food101")

    def split(name: str) -> ImageListDataset:
        list_file = folder / "meta" / f"{name}.txt"
        entries = read_lines(list_file, "food101")
        targets = labels_by_name(
            [e.split("/", 1)[0] for e in entries], classes, list_file, class_file
        )
        paths = [folder / "images" / f"{entry}.jpg" for entry in entries]
        check_listed(paths, list_file, "food101")
        return ImageListDataset("food101", classes, paths, targets)

    return Splits(split("train"), None, split("test"))


def _read_table(path: Path, release: str) -> list[dict[str, str]]:
    """A tab-separated file whose first line names the fields (Birdsnap's species.txt,
    images.txt) as one dict per row."""
    lines = [line for line in read_raw_lines(path, release) if line.strip()]
    if not lines:
        raise DataError(f"{path} is empty; {RELEASE_CONTENTS[release]}")
    fields = lines[0].strip().split("\t")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        values = line.rstrip("\r\n").split("\t")
        if len(values) != len(fields):
            raise DataError(
                f"{path} line {number} has {len(values)} tab-separated fields, its header "
                f"{len(fields)}; {RELEASE_CONTENTS[release]}"
            )
        rows.append(dict(zip(fields, values)))
    return rows


def _column(rows: list[dict[str, str]], field: str, path: Path, release: str) -> list[str]:
    if rows and field not in rows[0]:
        raise DataError(f"{path} has no {field!r} column; {RELEASE_CONTENTS[release]}")
    return [row[field] for row in rows]


def read_birdsnap(folder: Path, seed: int) -> Splits:
    """Birdsnap v1.1 (Berg et al. 2014): species.txt (id 1..500, common name, ...), images.txt
    (path, species_id, ...), test_images.txt (header `path`, then the 2,443 test paths); train is
    every images.txt row not in test_images.txt. The images are the ones get_birdsnap.py saved
    under its default --output_dir, download/images/<path> (images/<path> is accepted too).
    Flickr links of the release have died, so listed images not on disk are left out and
    counted in the notes; no image at all is a DataError. Classes: common names in id order."""
    classes, label_of_path, test_paths = _birdsnap_lists(folder)
    image_dir = _birdsnap_image_dir(folder)
    test_set = set(test_paths)
    train_paths = [path for path in label_of_path if path not in test_set]
    kept = {}
    for split, paths in (("train", train_paths), ("test", test_paths)):
        files = [image_dir / path for path in paths]
        found = present(files)
        if not any(found):
            raise DataError(
                f"none of the {len(paths)} Birdsnap {split} images listed in "
                f"{folder / 'images.txt'} is in {image_dir}; run get_birdsnap.py in {folder} to "
                "download them"
            )
        indices = [i for i, ok in enumerate(found) if ok]
        targets = [label_of_path[paths[i]] for i in indices]
        kept[split] = ImageListDataset("birdsnap", classes, [files[i] for i in indices], targets)
    skipped = {
        "train": len(train_paths) - len(kept["train"]),
        "test": len(test_paths) - len(kept["test"]),
    }
    notes = ()
    if any(skipped.values()):
        notes = (
            f"Birdsnap is incomplete (its Flickr links died): {skipped['train']} of "
            f"{len(train_paths)} train and {skipped['test']} of {len(test_paths)} test images "
            f"listed in images.txt are not in {image_dir} and were left out",
        )
    return Splits(kept["train"], None, kept["test"], notes)


def _birdsnap_lists(folder: Path) -> tuple[list[str], dict[str, int], list[str]]:
    """(class names in species-id order, label of every images.txt path, the test paths)."""
    species_file, images_file = folder / "species.txt", folder / "images.txt"
    species = _read_table(species_file, "birdsnap")
    ids = [
        _as_int(i, species_file, "birdsnap")
        for i in _column(species, "id", species_file, "birdsnap")
    ]
    common = _column(species, "common", species_file, "birdsnap")
    order = sorted(range(len(ids)), key=ids.__getitem__)
    classes = [common[i] for i in order]
    label_of_id = {ids[i]: label for label, i in enumerate(order)}
    rows = _read_table(images_file, "birdsnap")
    image_paths = _column(rows, "path", images_file, "birdsnap")
    species_ids = [
        _as_int(s, images_file, "birdsnap")
        for s in _column(rows, "species_id", images_file, "birdsnap")
    ]
    unknown = sorted(set(species_ids) - set(label_of_id))
    if unknown:
        raise DataError(
            f"{images_file} uses species id {unknown[0]} but {species_file} lists "
            f"{len(classes)} species; the release is inconsistent: extract birdsnap.tgz again"
        )
    label_of_path = {path: label_of_id[s] for path, s in zip(image_paths, species_ids)}
    test_file = folder / "test_images.txt"
    test_paths = [p for p in read_lines(test_file, "birdsnap") if p != "path"]  # header: path
    not_listed = [path for path in test_paths if path not in label_of_path]
    if not_listed:
        raise DataError(
            f"{test_file} lists {not_listed[0]} ({len(not_listed)} of {len(test_paths)} test "
            f"paths), which {images_file} lacks; extract birdsnap.tgz again"
        )
    return classes, label_of_path, test_paths


def _birdsnap_image_dir(folder: Path) -> Path:
    for image_dir in (folder / "download" / "images", folder / "images"):
        if image_dir.is_dir():
            return image_dir
    raise DataError(
        f"{folder / 'download' / 'images'} is missing: run get_birdsnap.py in {folder} to "
        f"download the images; {RELEASE_CONTENTS['birdsnap']}"
    )


def _as_int(text: str, path: Path, release: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(
            f"{path} has {text!r} where a number belongs; {RELEASE_CONTENTS[release]}"
        ) from None


def read_sun397(folder: Path, seed: int) -> Splits:
    """SUN397 (Xiao et al. 2010), split 1: ClassName.txt (lines `/a/abbey`, the class order),
    Training_01.txt and Testing_01.txt (lines `/a/abbey/sun_<id>.jpg`, 50 per class each) from
    Partitions.zip, found in SUN397/, SUN397/Partitions/ or Partitions/ beside SUN397/ (in that
    order). Class names drop the leading letter folder, as torchvision's SUN397 does
    (`abbey`, `apartment_building/outdoor`)."""
    class_file = folder / "ClassName.txt"
    keys = [key.rstrip("/") for key in read_lines(class_file, "sun397")]
    classes = ["/".join(key.strip("/").split("/")[1:]) or key.strip("/") for key in keys]

    def split(stem: str) -> ImageListDataset:
        list_file = _sun397_partition(folder, f"{stem}_{SUN397_PARTITION:02d}.txt")
        entries = read_lines(list_file, "sun397")
        targets = labels_by_name(
            [e.rsplit("/", 1)[0] for e in entries], keys, list_file, class_file
        )
        paths = [folder / entry.lstrip("/") for entry in entries]
        check_listed(paths, list_file, "sun397")
        return ImageListDataset("sun397", classes, paths, targets)

    return Splits(split("Training"), None, split("Testing"))


def _sun397_partition(folder: Path, file_name: str) -> Path:
    candidates = (folder / file_name, folder / "Partitions" / file_name)
    candidates += (folder.parent / "Partitions" / file_name,)
    for path in candidates:
        if path.is_file():
            return path
    raise missing(candidates[0], "sun397")


def read_aircraft(folder: Path, seed: int) -> Splits:
    """FGVC-Aircraft 2013b (Maji et al. 2013), variant level: data/variants.txt (the class
    order), data/images_variant_{train,val,test}.txt with lines `<id> <variant>` (the variant may
    hold spaces), data/images/<id>.jpg. val is the creators' (BYOL v3, App. D.1)."""
    data = folder / "data"
    class_file = data / "variants.txt"
    classes = read_lines(class_file, "aircraft")

    def split(name: str) -> ImageListDataset:
        list_file = data / f"images_variant_{name}.txt"
        entries = [line.split(" ", 1) for line in read_lines(list_file, "aircraft")]
        if any(len(entry) != 2 for entry in entries):
            raise DataError(
                f"{list_file} has a line without a variant; {RELEASE_CONTENTS['aircraft']}"
            )
        targets = labels_by_name(
            [variant for _, variant in entries], classes, list_file, class_file
        )
        paths = [data / "images" / f"{image_id}.jpg" for image_id, _ in entries]
        check_listed(paths, list_file, "aircraft")
        return ImageListDataset("aircraft", classes, paths, targets)

    return Splits(split("train"), split("val"), split("test"))


def read_dtd(folder: Path, seed: int) -> Splits:
    """DTD r1.0.1 (Cimpoi et al. 2014), split 1: labels/{train,val,test}1.txt with lines
    `<class>/<file>.jpg`, images/<class>/<file>.jpg. The release has no class list: the classes
    are the sorted folders of images/ (torchvision sorts the names a split uses, the same 47).
    val is the creators' val1.txt (BYOL v3, App. D.1)."""
    image_root = require(folder / "images", "dtd")
    classes = sorted(d.name for d in image_root.iterdir() if d.is_dir() and d.name[0] != ".")

    def split(name: str) -> ImageListDataset:
        list_file = folder / "labels" / f"{name}{DTD_PARTITION}.txt"
        entries = read_lines(list_file, "dtd")
        names = [entry.split("/", 1)[0] for entry in entries]
        targets = labels_by_name(names, classes, list_file, f"the folders of {image_root}")
        paths = [image_root / entry for entry in entries]
        check_listed(paths, list_file, "dtd")
        return ImageListDataset("dtd", classes, paths, targets)

    return Splits(split("train"), split("val"), split("test"))


def read_pets(folder: Path, seed: int) -> Splits:
    """Oxford-IIIT Pets (Parkhi et al. 2012): annotations/{trainval,test}.txt with lines
    `<image id> <class 1..37> <species> <breed id>` (3,680 and 3,669 lines), images/<id>.jpg.
    train is trainval.txt, test is test.txt; there is no creators' val. The release has no
    class-name file: class k is named by the breed prefix of its image ids (`Abyssinian`,
    `american_bulldog`), which must agree across both lists."""
    lists = {split: folder / "annotations" / f"{split}.txt" for split in ("trainval", "test")}
    entries = {split: _pets_entries(path) for split, path in lists.items()}
    breeds: dict[int, str] = {}
    for split, rows in entries.items():
        for image_id, class_id in rows:
            breed = image_id.rsplit("_", 1)[0]
            if breeds.setdefault(class_id, breed) != breed:
                raise DataError(
                    f"{lists[split]} gives class {class_id} to {image_id} but also to breed "
                    f"{breeds[class_id]!r}; extract annotations.tar.gz again"
                )
    count = max(breeds)
    if min(breeds) < 1 or len(breeds) != count:
        raise DataError(
            f"{folder / 'annotations'}: class ids go up to {count} but {len(breeds)} breeds "
            "appear in trainval.txt and test.txt; extract annotations.tar.gz again"
        )
    classes = [breeds[class_id] for class_id in range(1, count + 1)]

    def split(name: str) -> ImageListDataset:
        paths = [folder / "images" / f"{image_id}.jpg" for image_id, _ in entries[name]]
        check_listed(paths, lists[name], "pets")
        return ImageListDataset("pets", classes, paths, [c - 1 for _, c in entries[name]])

    return Splits(split("trainval"), None, split("test"))


def _pets_entries(path: Path) -> list[tuple[str, int]]:
    rows = []
    for line in read_lines(path, "pets"):
        if line.startswith("#"):  # list.txt's comment lines; kept harmless here
            continue
        fields = line.split()
        if len(fields) < 2:
            raise DataError(f"{path} has the line {line!r}; {RELEASE_CONTENTS['pets']}")
        rows.append((fields[0], _as_int(fields[1], path, "pets")))
    if not rows:
        raise DataError(f"{path} lists no images; {RELEASE_CONTENTS['pets']}")
    return rows


def read_voc2007(folder: Path, seed: int) -> Splits:
    """PASCAL VOC2007 classification (Everingham et al. 2010): `folder` is the VOCdevkit holding
    VOC2007/ImageSets/Main/<class>_{train,val,test}.txt (lines `<id> <1|-1|0>`) and
    VOC2007/JPEGImages/<id>.jpg. The classes are those with a <class>_train.txt, sorted: the
    devkit's 20, alphabetical (aeroplane ... tvmonitor). Multi-label: see VocDataset. val is the
    creators' (BYOL v3, App. D.1)."""
    main = require(folder / "VOC2007" / "ImageSets" / "Main", "voc2007")
    classes = sorted(path.name[: -len("_train.txt")] for path in main.glob("*_train.txt"))
    if not classes:
        raise missing(main / "aeroplane_train.txt", "voc2007")
    return Splits(*(_voc_split(folder, main, classes, s) for s in ("train", "val", "test")))


def _voc_split(folder: Path, main: Path, classes: list[str], split: str) -> VocDataset:
    """One split's label matrix [N, C] from its C list files, rows in the first file's order."""
    columns, first_file, image_ids = [], main / f"{classes[0]}_{split}.txt", []
    for class_name in classes:
        list_file = main / f"{class_name}_{split}.txt"
        rows = [line.split() for line in read_lines(list_file, "voc2007")]
        if any(len(row) != 2 or row[1] not in ("1", "-1", "0") for row in rows):
            raise DataError(f"{list_file} has a line other than `<id> <1|-1|0>`; extract it again")
        values = dict(rows)
        if not image_ids:
            image_ids = [image_id for image_id, _ in rows]
        if len(values) != len(rows) or values.keys() != set(image_ids):
            raise DataError(
                f"{list_file} lists {len(rows)} images but {first_file} lists {len(image_ids)} "
                "(or other ones); every <class>_<split>.txt lists the same images: extract again"
            )
        columns.append([int(values[image_id]) for image_id in image_ids])
    matrix = torch.tensor(columns, dtype=torch.int8).T.contiguous()  # [N, C]
    unlabelled = (matrix == -1).all(dim=1)
    if unlabelled.any():
        image_id = image_ids[int(unlabelled.nonzero()[0])]
        raise DataError(
            f"image {image_id} is -1 (absent) in every {split} list of {main}, so it shows no "
            "class; the release is inconsistent: extract it again"
        )
    paths = [folder / "VOC2007" / "JPEGImages" / f"{image_id}.jpg" for image_id in image_ids]
    check_listed(paths, first_file, "voc2007")
    return VocDataset("voc2007", classes, paths, matrix)
