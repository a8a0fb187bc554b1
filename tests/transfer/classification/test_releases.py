"""The 12 release readers on miniature copies of the creators' layouts (miniatures.py)."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from pretrain.data import DataError
from tests.transfer.classification.miniatures import (
    cars_annotations,
    class_names,
    voc_row,
    write_jpeg,
    write_lines,
    write_miniature,
)
from transfer.classification.releases import (
    FOLDER_NAMES,
    METRIC,
    PAPER_CLASSES,
    TRANSFER_DATASETS,
    read_release,
)

WITH_VAL = {"aircraft", "voc2007", "dtd", "flowers"}  # the creators' val split is used
EXPECTED_NAMES = {  # what the reader calls the first three classes of each miniature
    "food101": ["apple_pie", "baby_back_ribs", "baklava"],
    "cifar10": ["airplane", "automobile", "bird"],
    "cifar100": ["apple", "aquarium_fish", "baby"],
    "birdsnap": ["Acadian Flycatcher", "Acorn Woodpecker", "Alder Flycatcher"],
    "sun397": ["abbey", "airport_terminal", "apartment_building/outdoor"],  # as torchvision's
    "cars": ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012"],
    "aircraft": ["707-320", "Cessna 172", "DHC-8-100"],
    "voc2007": ["aeroplane", "bicycle", "bird"],
    "dtd": ["banded", "blotchy", "braided"],
    "pets": ["Abyssinian", "american_bulldog", "american_pit_bull_terrier"],
    "caltech101": ["BACKGROUND_Google", "Faces", "accordion"],
    "flowers": ["1", "2", "3"],
}


def splits(release):
    return {"train": release.train, "val": release.val, "test": release.test}


def test_table_constants_cover_the_twelve_data_sets_in_table_3_order():
    assert TRANSFER_DATASETS[:3] == ("food101", "cifar10", "cifar100")
    assert TRANSFER_DATASETS[-3:] == ("pets", "caltech101", "flowers")
    for table in (FOLDER_NAMES, PAPER_CLASSES, METRIC):
        assert set(table) == set(TRANSFER_DATASETS)
    assert PAPER_CLASSES["caltech101"] == 102 and PAPER_CLASSES["aircraft"] == 100
    assert {n for n, m in METRIC.items() if m == "mean_per_class"} == {
        "aircraft",
        "pets",
        "caltech101",
        "flowers",
    }
    assert METRIC["voc2007"] == "map11" and METRIC["food101"] == "top1"


@pytest.mark.parametrize("name", TRANSFER_DATASETS)
def test_counts_labels_and_class_names_per_split(tmp_path: Path, name: str):
    folder = write_miniature(name, tmp_path, classes=3, per_class=4)
    release = read_release(name, folder)
    assert release.name == name and release.metric == METRIC[name] and release.root == folder
    assert (release.val is not None) == (name in WITH_VAL)
    train_per_class = 30 if name == "caltech101" else 4  # Caltech: 30 drawn per class
    for split_name, split in splits(release).items():
        if split is None:
            continue
        assert split.name == name and split.classes == EXPECTED_NAMES[name]
        if name == "voc2007":  # one target per image: its first positive (or difficult) class
            assert len(split) == 12
            continue
        per_class = train_per_class if split_name == "train" else 4
        assert Counter(split.targets) == {0: per_class, 1: per_class, 2: per_class}
    image, label = release.test[0]
    size = 32 if name.startswith("cifar") else 8
    assert image.dtype == torch.uint8 and image.shape == (3, size, size)
    assert label == release.test.targets[0]


@pytest.mark.parametrize("name", TRANSFER_DATASETS)
def test_root_is_the_release_folder_or_its_parent(tmp_path: Path, name: str):
    folder = write_miniature(name, tmp_path, classes=2, per_class=2)
    by_folder, by_parent = read_release(name, folder), read_release(name, tmp_path)
    assert by_parent.root == folder
    for split_name, split in splits(by_folder).items():
        other = splits(by_parent)[split_name]
        assert (split is None) == (other is None)
        if split is not None:
            assert split.targets == other.targets and split.classes == other.classes
            if hasattr(split, "paths"):  # the same file names: one feature-cache entry
                assert split.paths == other.paths


@pytest.mark.parametrize("name", [n for n in TRANSFER_DATASETS if not n.startswith("cifar")])
def test_train_val_test_are_disjoint_and_files_exist(tmp_path: Path, name: str):
    release = read_release(name, write_miniature(name, tmp_path))
    seen: set[Path] = set()
    for split in splits(release).values():
        if split is None:
            continue
        paths = set(split.paths)
        assert len(paths) == len(split) and not paths & seen
        assert all(path.is_file() for path in paths)
        seen |= paths


def test_food101_labels_follow_the_class_folder_of_each_listed_entry(tmp_path: Path):
    release = read_release("food101", write_miniature("food101", tmp_path))
    for path, label in zip(release.train.paths, release.train.targets):
        assert path.parent.name == release.train.classes[label]
    train_ids = {p.stem for p in release.train.paths}
    assert train_ids.isdisjoint(p.stem for p in release.test.paths)


def test_cifar_reuses_the_pretrain_reader(tmp_path: Path):
    from pretrain.data import CifarDataset

    release = read_release("cifar100", write_miniature("cifar100", tmp_path, classes=4))
    assert isinstance(release.train, CifarDataset) and release.train.num_classes == 4
    assert len(release.train) == 16 and len(release.test) == 16


def test_cars_labels_are_the_one_based_annotation_class(tmp_path: Path):
    folder = write_miniature("cars", tmp_path, classes=3, per_class=2)
    release = read_release("cars", folder)
    annotations = scipy.io.loadmat(folder / "devkit" / "cars_train_annos.mat")["annotations"][0]
    for record, path, label in zip(annotations, release.train.paths, release.train.targets):
        assert path.name == record["fname"][0] and label == int(record["class"][0, 0]) - 1
    assert release.test.targets == [0, 1, 2, 0, 1, 2]  # from the _withlabels file


def test_cars_test_labels_are_also_found_in_devkit(tmp_path: Path):
    folder = write_miniature("cars", tmp_path)
    shutil.move(folder / "cars_test_annos_withlabels.mat", folder / "devkit")
    assert len(read_release("cars", folder).test) == 12


def test_flowers_labels_are_looked_up_by_one_based_image_id(tmp_path: Path):
    folder = write_miniature("flowers", tmp_path, classes=3, per_class=2)
    labels = scipy.io.loadmat(folder / "imagelabels.mat")["labels"][0]
    val_ids = scipy.io.loadmat(folder / "setid.mat")["valid"][0]
    release = read_release("flowers", folder)
    assert [p.name for p in release.val.paths] == [f"image_{i:05d}.jpg" for i in val_ids]
    assert release.val.targets == [int(labels[i - 1]) - 1 for i in val_ids]


def test_aircraft_variants_with_spaces_and_the_creators_val(tmp_path: Path):
    folder = write_miniature("aircraft", tmp_path, classes=2, per_class=1)
    release = read_release("aircraft", folder)
    assert release.val.classes[1] == "Cessna 172" and release.val.targets == [0, 1]
    listed = (folder / "data" / "images_variant_val.txt").read_text().split()
    assert release.val.paths[0].stem == listed[0]


def test_sun397_partitions_are_found_beside_or_inside_the_release(tmp_path: Path):
    folder = write_miniature("sun397", tmp_path)
    expected = read_release("sun397", folder).test.targets
    (tmp_path / "Partitions").mkdir()
    for stem in ("Training_01", "Testing_01"):
        shutil.move(folder / f"{stem}.txt", tmp_path / "Partitions")
    assert read_release("sun397", tmp_path).test.targets == expected
    shutil.move(tmp_path / "Partitions", folder / "Partitions")
    release = read_release("sun397", folder)
    assert release.test.targets == expected
    assert release.train.paths[0].relative_to(folder).parts[:2] == ("a", "abbey")


def test_dtd_and_pets_use_their_split_files(tmp_path: Path):
    dtd = read_release("dtd", write_miniature("dtd", tmp_path, per_class=2))
    assert [p.name for p in dtd.val.paths[:2]] == ["banded_0002.jpg", "banded_0005.jpg"]
    pets = read_release("pets", write_miniature("pets", tmp_path, per_class=2))
    assert [p.name for p in pets.train.paths[:3]] == [
        "Abyssinian_1.jpg",
        "Abyssinian_3.jpg",
        "american_bulldog_1.jpg",
    ]
    assert pets.train.targets[:3] == [0, 0, 1]  # trainval.txt's class ids 1, 1, 2


def test_caltech_draw_is_30_per_class_and_deterministic_in_the_seed(tmp_path: Path):
    folder = write_miniature("caltech101", tmp_path, classes=2, per_class=3)  # 33 per class
    first, again = read_release("caltech101", folder), read_release("caltech101", folder, seed=0)
    other = read_release("caltech101", folder, seed=1)
    assert first.train.paths == again.train.paths and first.test.paths == again.test.paths
    assert first.train.paths != other.train.paths
    for release in (first, other):
        assert Counter(release.train.targets) == {0: 30, 1: 30}
        assert Counter(release.test.targets) == {0: 3, 1: 3}
        every_file = sorted(folder.glob("*/*.jpg"))
        assert sorted(release.train.paths + release.test.paths) == every_file
    assert "seed 1" in other.notes[0]


def test_caltech_class_with_too_few_images_is_refused(tmp_path: Path):
    folder = write_miniature("caltech101", tmp_path, classes=2, per_class=1)
    (folder / "Faces" / "image_0031.jpg").unlink()  # 30 left: nothing to test on
    with pytest.raises(DataError, match=r"Faces has 30 images .* draws 30 per class"):
        read_release("caltech101", folder)


def test_voc_label_matrix_holds_the_devkit_values_with_difficult_zero(tmp_path: Path):
    folder = write_miniature("voc2007", tmp_path, classes=3, per_class=4)
    release = read_release("voc2007", folder)
    for split in (release.train, release.val, release.test):
        expected = torch.tensor([voc_row(i, i % 3, 3) for i in range(12)], dtype=torch.int8)
        assert split.label_matrix.dtype == torch.int8 and torch.equal(split.label_matrix, expected)
    matrix = release.val.label_matrix
    assert (matrix == 0).any() and (matrix == 1).any() and (matrix == -1).any()
    assert matrix[1].tolist() == [-1, 1, 0]  # image 2: bicycle, and a difficult bird
    assert matrix[4].tolist() == [-1, 0, -1]  # image 5: only a difficult bicycle
    # targets: the first positive class, else the first difficult one
    assert release.val.targets[1] == 1 and release.val.targets[4] == 1
    assert matrix[2].tolist() == [-1, 1, 1] and release.val.targets[2] == 1  # a bird image
    assert matrix[10].tolist() == [1, 1, 0] and release.val.targets[10] == 0  # a bicycle image
    assert release.val.paths[0].name == "000013.jpg"  # train holds 000001..000012


def test_voc_accepts_the_voc2007_folder_itself(tmp_path: Path):
    folder = write_miniature("voc2007", tmp_path)
    assert read_release("voc2007", folder / "VOC2007").root == folder


def test_birdsnap_train_is_images_txt_minus_test_images(tmp_path: Path):
    folder = write_miniature("birdsnap", tmp_path, classes=2, per_class=2)
    release = read_release("birdsnap", folder)
    test_lines = (folder / "test_images.txt").read_text().split()[1:]
    root = folder / "download" / "images"
    assert [str(p.relative_to(root)) for p in release.test.paths] == test_lines
    assert not set(release.train.paths) & set(release.test.paths)
    assert len(release.train) == 4 and release.notes == ()


def test_birdsnap_images_not_downloaded_are_counted_in_the_notes(tmp_path: Path):
    folder = write_miniature("birdsnap", tmp_path, classes=2, per_class=2)
    (folder / "download" / "images" / "Acadian_Flycatcher" / "0001.jpg").unlink()  # train
    (folder / "download" / "images" / "Acorn_Woodpecker" / "0008.jpg").unlink()  # test
    (folder / "download" / "images" / "Acorn_Woodpecker" / "0006.jpg").unlink()  # test
    release = read_release("birdsnap", folder)
    assert len(release.train) == 3 and len(release.test) == 2
    assert "1 of 4 train and 2 of 4 test images" in release.notes[0]


def test_birdsnap_with_no_image_downloaded_is_an_error(tmp_path: Path):
    folder = write_miniature("birdsnap", tmp_path)
    shutil.rmtree(folder / "download" / "images")
    with pytest.raises(DataError, match="run get_birdsnap.py"):
        read_release("birdsnap", folder)
    (folder / "download" / "images").mkdir()
    with pytest.raises(DataError, match="none of the 12 Birdsnap train images"):
        read_release("birdsnap", folder)


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    ("name", "relative", "contents"),
    [
        ("food101", "meta/train.txt", r"meta/\{classes,train,test\}.txt"),
        ("aircraft", "data/images_variant_val.txt", "images_variant_"),
        ("dtd", "labels/test1.txt", "dtd-r1.0.1.tar.gz"),
        ("pets", "annotations/test.txt", "annotations.tar.gz"),
        ("sun397", "Testing_01.txt", "Partitions.zip"),
        ("voc2007", "VOC2007/ImageSets/Main/bird_test.txt", "VOCtest_06-Nov-2007.tar"),
        ("birdsnap", "test_images.txt", "birdsnap.tgz"),
        ("cars", "cars_test_annos_withlabels.mat", "car_devkit.tgz"),
        ("flowers", "setid.mat", "imagelabels.mat, setid.mat"),
    ],
)
def test_missing_split_file_names_it_and_the_release_contents(tmp_path, name, relative, contents):
    folder = write_miniature(name, tmp_path)
    (folder / relative).unlink()
    with pytest.raises(DataError, match=contents) as error:
        read_release(name, folder)
    assert f"{Path(relative).name} is missing" in str(error.value)


def test_incomplete_release_under_a_parent_dir_names_the_file_inside_it(tmp_path: Path):
    folder = write_miniature("food101", tmp_path)
    shutil.rmtree(folder / "meta")
    with pytest.raises(DataError) as error:
        read_release("food101", tmp_path)
    assert str(error.value).startswith(f"{folder / 'meta' / 'classes.txt'} is missing; ")


@pytest.mark.parametrize(
    ("name", "relative"),
    [
        ("food101", "images/baklava/300021.jpg"),
        ("aircraft", "data/images/1010002.jpg"),
        ("cars", "cars_test/00003.jpg"),
        ("flowers", "jpg/image_00005.jpg"),
        ("voc2007", "VOC2007/JPEGImages/000030.jpg"),
    ],
)
def test_listed_image_missing_is_named(tmp_path: Path, name: str, relative: str):
    folder = write_miniature(name, tmp_path)
    (folder / relative).unlink()
    with pytest.raises(DataError, match="is listed in .* but absent") as error:
        read_release(name, folder)
    assert str(folder / relative) in str(error.value)


def test_damaged_image_is_named_when_loaded(tmp_path: Path):
    release = read_release("dtd", write_miniature("dtd", tmp_path))
    path = release.val.paths[1]
    path.write_bytes(b"\xff\xd8garbage")
    with pytest.raises(DataError, match="cannot read image") as error:
        release.val[1]
    assert str(path) in str(error.value)


def test_cars_annotation_class_beyond_the_class_names_names_both_counts(tmp_path: Path):
    folder = write_miniature("cars", tmp_path, classes=3, per_class=1)
    records = cars_annotations(["00001.jpg", "00002.jpg", "00003.jpg"], [1, 4, 2])
    scipy.io.savemat(folder / "devkit" / "cars_train_annos.mat", {"annotations": records})
    with pytest.raises(DataError, match="has class 4 but .*cars_meta.mat names 3 classes"):
        read_release("cars", folder)


def test_cars_test_file_without_labels_is_refused(tmp_path: Path):
    folder = write_miniature("cars", tmp_path)
    shutil.copy(
        folder / "devkit" / "cars_test_annos.mat", folder / "cars_test_annos_withlabels.mat"
    )
    with pytest.raises(DataError, match="not class and fname"):
        read_release("cars", folder)


def test_flowers_label_outside_1_to_102_is_refused(tmp_path: Path):
    folder = write_miniature("flowers", tmp_path, classes=2, per_class=1)
    labels = scipy.io.loadmat(folder / "imagelabels.mat")["labels"]
    labels[0, 0] = 103
    scipy.io.savemat(folder / "imagelabels.mat", {"labels": labels})
    with pytest.raises(DataError, match="label 103 but Oxford Flowers has 102 classes"):
        read_release("flowers", folder)


def test_flowers_setid_beyond_the_labelled_images_names_both_counts(tmp_path: Path):
    folder = write_miniature("flowers", tmp_path, classes=2, per_class=1)  # 6 images
    ids = scipy.io.loadmat(folder / "setid.mat")
    scipy.io.savemat(
        folder / "setid.mat",
        {"trnid": np.array([[1, 9]], np.uint16), "valid": ids["valid"], "tstid": ids["tstid"]},
    )
    with pytest.raises(DataError, match="names image 9 but .* labels 6 images"):
        read_release("flowers", folder)


def test_text_list_class_missing_from_the_class_list_names_both_counts(tmp_path: Path):
    folder = write_miniature("food101", tmp_path, classes=3)
    write_lines(folder / "meta" / "classes.txt", class_names("food101", 2))
    with pytest.raises(
        DataError, match="uses 3 classes but .*classes.txt lists 2, without 'baklava'"
    ):
        read_release("food101", folder)


def test_aircraft_variant_missing_from_variants_txt_is_refused(tmp_path: Path):
    folder = write_miniature("aircraft", tmp_path, classes=3)
    write_lines(folder / "data" / "variants.txt", ["707-320", "DHC-8-100"])
    with pytest.raises(DataError, match="lists 2, without 'Cessna 172'"):
        read_release("aircraft", folder)


def test_pets_class_ids_without_a_breed_name_both_counts(tmp_path: Path):
    folder = write_miniature("pets", tmp_path, classes=2, per_class=1)
    write_jpeg(folder / "images" / "beagle_1.jpg", 8)
    with open(folder / "annotations" / "test.txt", "a") as file:
        file.write("beagle_1 5 2 1\n")  # class 5 of 5, but classes 3 and 4 have no breed
    with pytest.raises(DataError, match="class ids go up to 5 but 3 breeds appear"):
        read_release("pets", folder)


def test_birdsnap_species_id_beyond_species_txt_is_refused(tmp_path: Path):
    folder = write_miniature("birdsnap", tmp_path, classes=2, per_class=1)
    lines = (folder / "species.txt").read_text().splitlines()
    write_lines(folder / "species.txt", lines[:2])  # header + species 1
    with pytest.raises(DataError, match="uses species id 2 but .*species.txt lists 1 species"):
        read_release("birdsnap", folder)


def test_voc_class_files_listing_different_images_name_both_counts(tmp_path: Path):
    folder = write_miniature("voc2007", tmp_path, classes=2, per_class=2)
    bicycle = folder / "VOC2007" / "ImageSets" / "Main" / "bicycle_val.txt"
    write_lines(bicycle, bicycle.read_text().splitlines()[:-1])
    with pytest.raises(
        DataError, match="bicycle_val.txt lists 3 images but .*aeroplane_val.txt lists 4"
    ):
        read_release("voc2007", folder)


def test_unknown_data_set_and_missing_root_are_refused(tmp_path: Path):
    with pytest.raises(DataError, match="unknown transfer data set 'imagenet'"):
        read_release("imagenet", tmp_path)
    with pytest.raises(DataError, match="does not exist; the Oxford-IIIT Pets release"):
        read_release("pets", tmp_path / "nowhere")
