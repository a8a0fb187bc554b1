"""NYU Depth v2 readers: the labelled 1,449 (official 795 / 654 split) and BTS's "sync" frames.

Both return (uint8 image [3, H, W], float32 depth [H, W] in metres); a depth of 0 or a
non-finite depth marks an invalid pixel (no Kinect measurement).

Labelled set (`--data` = the folder holding both files, or the .mat file with splits.mat beside it):
    nyu_depth_v2_labeled.mat   MATLAB v7.3 = HDF5 (h5py; scipy.io.loadmat cannot read it).
                               MATLAB's images 480x640x3x1449 uint8 are (1449, 3, 640, 480) in h5py
                               and depths 480x640x1449 (the in-painted, "filled" depth, float32
                               metres) are (1449, 640, 480): each frame is transposed back
                               (images[i].transpose(2, 1, 0), depths[i].T), as every public h5py
                               loader does (e.g. cleinc/bts utils/extract_official_train_test_set_
                               from_mat.py: image.T, depth_raw[i].T).
    splits.mat                 old-format .mat (scipy.io.loadmat): trainNdxs (795) and testNdxs
                               (654), 1-based column vectors into the 1,449 frames.
Laina et al.'s evaluateNYU.m (iro-cp/FCRN-DepthPrediction) scores `depths`, the filled depth.

Frames (`--data` = BTS's sync/ folder; cleinc/bts, utils/sync_project_frames_multi_threads.m):
    <scene>/rgb_00000.jpg          640x480 RGB, every 7th synchronised raw frame of a training scene
    <scene>/sync_depth_00000.png   uint16 PNG, the projected raw depth x 1000 (millimetres); 0 where
                                   the Kinect measured nothing (BTS trains on depth > 0.1 m only)
    nyudepthv2_train_files_with_gt.txt  optional list (bts/train_test_inputs/, 24,231 lines)
                                   "<rgb path> <depth path> <focal>", paths relative to sync/
                                   (with a leading '/'); without it every pair found is used.
Only the training split exists in frames: the test set is always the labelled 654.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import scipy.io
import torch
from PIL import Image

from pretrain.data import DataError

DEPTH_SOURCES = ("labelled", "frames")
LABELLED_FILE = "nyu_depth_v2_labeled.mat"
SPLITS_FILE = "splits.mat"
SPLIT_KEYS = {"train": "trainNdxs", "test": "testNdxs"}
FRAMES_LIST = "nyudepthv2_train_files_with_gt.txt"  # cleinc/bts train_test_inputs/
FRAMES_DEPTH_SCALE = 1000.0  # sync_depth PNG = uint16(metres x 1000): sync_project_frames...m

_OPEN_FILES: dict[tuple[int, str], h5py.File] = {}  # (process id, path) -> read-only handle


@dataclass(frozen=True)
class DepthSet:
    """The (RGB, depth) pairs of one split; labelled frames are rows of one HDF5 file."""

    name: str  # "nyu-labelled" or "nyu-frames"
    split: str
    ids: tuple[str, ...]
    mat_file: Path | None = None  # labelled: nyu_depth_v2_labeled.mat
    rows: tuple[int, ...] = ()  # labelled: 0-based frame indices into the .mat
    images: tuple[Path, ...] = ()  # frames: rgb_*.jpg
    depths: tuple[Path, ...] = ()  # frames: sync_depth_*.png

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 image [3, H, W], float32 depth [H, W] in metres) of pair `index`."""
        if self.mat_file is not None:
            image, depth = _labelled_frame(self.mat_file, self.rows[index])
        else:
            image, depth = _frame_pair(self.images[index], self.depths[index])
        return torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(depth)

    def fingerprint(self) -> str:
        """SHA-256 of the ids and the source files' sizes: which data a result was measured on."""
        sources = (self.mat_file,) if self.mat_file is not None else self.images + self.depths
        sizes = [f"{path.name} {path.stat().st_size}" for path in sources]
        return hashlib.sha256("\n".join([self.name, *self.ids, *sizes]).encode()).hexdigest()

    def subset(self, indices: list[int], split: str) -> DepthSet:
        """The pairs at `indices`, named `split`."""
        pick = [tuple(items[i] for i in indices) for items in (self.ids, self.rows)]
        if self.mat_file is not None:
            return DepthSet(self.name, split, pick[0], self.mat_file, pick[1])
        files = [tuple(items[i] for i in indices) for items in (self.images, self.depths)]
        return DepthSet(self.name, split, pick[0], images=files[0], depths=files[1])


def build_depth_set(source: str, root: str | Path | None, split: str) -> DepthSet:
    """The `split` of NYU Depth v2 from `source` ("labelled" or "frames") under `root`."""
    if source not in DEPTH_SOURCES:
        raise DataError(f"unknown NYU depth source {source!r}; use one of {DEPTH_SOURCES}")
    if root is None:
        raise DataError("no --data given; pass the folder of the NYU Depth v2 files")
    return read_labelled(root, split) if source == "labelled" else read_frames(root, split)


# ---------------------------------------------------------------------------------------------
# The labelled 1,449


def read_labelled(root: str | Path, split: str) -> DepthSet:
    """The official `split` ("train": 795, "test": 654) of nyu_depth_v2_labeled.mat."""
    if split not in SPLIT_KEYS:
        raise DataError(f"unknown NYU labelled split {split!r}; use train or test")
    mat_file, splits_file = _labelled_paths(Path(root))
    count = _check_labelled(mat_file)
    rows = _split_rows(splits_file, SPLIT_KEYS[split], count)
    ids = tuple(f"{row + 1:04d}" for row in rows)  # MATLAB's 1-based frame number
    return DepthSet("nyu-labelled", split, ids, mat_file, rows)


def _labelled_paths(root: Path) -> tuple[Path, Path]:
    mat_file = root if root.suffix == ".mat" else root / LABELLED_FILE
    if not mat_file.is_file():
        raise DataError(
            f"{mat_file} does not exist; --data must be the folder holding {LABELLED_FILE} "
            f"and {SPLITS_FILE} (from cs.nyu.edu/~silberman/datasets/nyu_depth_v2.html)"
        )
    splits_file = mat_file.parent / SPLITS_FILE
    if not splits_file.is_file():
        raise DataError(
            f"{splits_file} does not exist; put the official {SPLITS_FILE} (trainNdxs / "
            f"testNdxs) beside {mat_file.name}"
        )
    return mat_file, splits_file


def _check_labelled(mat_file: Path) -> int:
    """The number of frames, after checking the file is HDF5 with matching images and depths."""
    if not h5py.is_hdf5(mat_file):
        with open(mat_file, "rb") as handle:
            head = handle.read(20).decode("latin-1")
        kind = "an older MATLAB .mat" if head.startswith("MATLAB") else "not an HDF5 file"
        raise DataError(
            f"{mat_file} is {kind} ({head.strip()!r}); NYU's {LABELLED_FILE} is MATLAB v7.3 "
            "(HDF5): download it again or re-save it with save(..., '-v7.3')"
        )
    with h5py.File(mat_file, "r") as data:
        for key in ("images", "depths"):
            if key not in data:
                raise DataError(
                    f"{mat_file} has no '{key}' variable (it has {sorted(data.keys())}); "
                    f"it is not NYU Depth v2's {LABELLED_FILE}"
                )
        images, depths = data["images"].shape, data["depths"].shape
    if len(images) != 4 or len(depths) != 3 or images[0] != depths[0] or images[1] != 3:
        raise DataError(
            f"{mat_file} holds images {images} and depths {depths}; expected (N, 3, W, H) "
            "and (N, W, H) with the same N (MATLAB's H x W x 3 x N and H x W x N)"
        )
    if images[2:] != depths[1:]:
        raise DataError(f"{mat_file}: images {images} and depths {depths} differ in size")
    return images[0]


def _split_rows(splits_file: Path, key: str, count: int) -> tuple[int, ...]:
    try:
        splits = scipy.io.loadmat(splits_file)
    except (ValueError, NotImplementedError, OSError) as error:
        raise DataError(f"{splits_file} is not a readable MATLAB .mat file ({error})") from error
    if key not in splits:
        raise DataError(f"{splits_file} has no '{key}' variable; it is not NYU's {SPLITS_FILE}")
    numbers = np.asarray(splits[key], dtype=np.float64).reshape(-1)
    bad = numbers[(numbers != np.round(numbers)) | (numbers < 1) | (numbers > count)]
    if bad.size:
        raise DataError(
            f"{splits_file}: {key} holds {bad[0]:g}, outside the 1-based frame numbers "
            f"1..{count} of the .mat beside it; the two files do not belong together"
        )
    return tuple(int(number) - 1 for number in numbers)


def _handle(mat_file: Path) -> h5py.File:
    """This process's read-only handle (DataLoader workers open their own after fork)."""
    key = (os.getpid(), str(mat_file))
    if key not in _OPEN_FILES:
        _OPEN_FILES[key] = h5py.File(mat_file, "r")
    return _OPEN_FILES[key]


def _labelled_frame(mat_file: Path, row: int) -> tuple[np.ndarray, np.ndarray]:
    data = _handle(mat_file)
    image = np.ascontiguousarray(data["images"][row].transpose(2, 1, 0))  # (3, W, H) -> H, W, 3
    depth = np.ascontiguousarray(data["depths"][row].T, dtype=np.float32)  # (W, H) -> H, W
    return image, depth


# ---------------------------------------------------------------------------------------------
# BTS's sync frames


def read_frames(root: str | Path, split: str) -> DepthSet:
    """The training frames of BTS's sync/ folder (see the module docstring)."""
    if split != "train":
        raise DataError(
            f"NYU frames have only a train split, not {split!r}; the test set is the labelled "
            "654 (--depth-source labelled)"
        )
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a directory; pass BTS's nyu_depth_v2/sync folder")
    list_file = root / FRAMES_LIST
    pairs = _listed_pairs(root, list_file) if list_file.is_file() else _found_pairs(root)
    if not pairs:
        raise DataError(
            f"{root} holds no <scene>/rgb_NNNNN.jpg + sync_depth_NNNNN.png pairs; pass BTS's "
            "nyu_depth_v2/sync folder"
        )
    missing = [str(path) for _, rgb, depth in pairs for path in (rgb, depth) if not path.is_file()]
    if missing:
        raise DataError(
            f"{len(missing)} files listed in {list_file} are missing under {root}, e.g. "
            f"{missing[:3]}; check --data"
        )
    ids, images, depths = (tuple(items) for items in zip(*pairs))
    return DepthSet("nyu-frames", split, ids, images=images, depths=depths)


def _frame_id(rgb: Path) -> str:
    return f"{rgb.parent.name}/{rgb.stem.removeprefix('rgb_')}"


def _listed_pairs(root: Path, list_file: Path) -> list[tuple[str, Path, Path]]:
    pairs = []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) < 2:
            raise DataError(
                f"{list_file} line {number} is {line!r}; expected '<rgb path> <depth path> "
                "<focal>' (BTS's list format)"
            )
        rgb, depth = (root / field.lstrip("/") for field in fields[:2])
        pairs.append((_frame_id(rgb), rgb, depth))
    return pairs


def _found_pairs(root: Path) -> list[tuple[str, Path, Path]]:
    pairs = []
    for rgb in sorted(root.glob("*/rgb_*.jpg")):
        depth = rgb.with_name(rgb.name.replace("rgb_", "sync_depth_", 1)).with_suffix(".png")
        if depth.is_file():
            pairs.append((_frame_id(rgb), rgb, depth))
    return pairs


def _frame_pair(rgb_file: Path, depth_file: Path) -> tuple[np.ndarray, np.ndarray]:
    with Image.open(rgb_file) as image:
        rgb = np.asarray(image.convert("RGB"))
    with Image.open(depth_file) as depth_image:
        millimetres = np.asarray(depth_image)
    if millimetres.dtype != np.uint16 and depth_image.mode not in ("I;16", "I"):
        raise DataError(
            f"{depth_file} is a {depth_image.mode} PNG; NYU sync depth must be 16-bit "
            "millimetres (uint16 PNG)"
        )
    if millimetres.shape != rgb.shape[:2]:
        raise DataError(
            f"{depth_file} is {millimetres.shape[1]}x{millimetres.shape[0]} px but "
            f"{rgb_file.name} is {rgb.shape[1]}x{rgb.shape[0]} px; a pair must have one size"
        )
    return rgb.copy(), (millimetres.astype(np.float32) / FRAMES_DEPTH_SCALE)
