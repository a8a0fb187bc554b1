"""Tiny NYU Depth v2 files in the real layouts: nyu_depth_v2_labeled.mat + splits.mat, and BTS's
sync/ frames.

The .mat is written as MATLAB writes a v7.3 file: HDF5 behind a 512-byte user block whose first
128 bytes are MATLAB's header (116 bytes of text, 8 bytes of subsystem offset, version 0x0200 and
the endian mark "IM"); every variable has its axes reversed (MATLAB is column-major: its
H x W x 3 x N images are (N, 3, W, H) in h5py) and a MATLAB_class attribute. splits.mat is an
old-format .mat from scipy.io.savemat with 1-based column vectors (float64, MATLAB's default
double: the real file's dtype was not checked).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import scipy.io
from PIL import Image

MATLAB_HEADER = (
    b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Thu Jun 14 11:28:34 2012 "
    b"HDF5 schema 1.00 ."
)
USERBLOCK = 512
MATLAB_CLASSES = {
    np.uint8: "uint8",
    np.uint16: "uint16",
    np.float32: "single",
    np.float64: "double",
}


def pattern_images(count: int, height: int = 48, width: int = 64, seed: int = 0):
    """(uint8 images [N, H, W, 3], float32 depths [N, H, W] in metres): asymmetric patterns (a
    ramp along each axis at different rates plus noise) so a wrong transpose or flip differs."""
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    images = np.empty((count, height, width, 3), np.uint8)
    depths = np.empty((count, height, width), np.float32)
    for n in range(count):
        for channel in range(3):
            ramp = (3 * rows + 7 * cols + 50 * channel + 11 * n) % 256
            images[n, :, :, channel] = (ramp + rng.integers(0, 5, (height, width))) % 256
        depths[n] = 0.5 + 0.05 * rows + 0.01 * cols + 0.1 * n + rng.random((height, width)) * 0.01
    return images, depths


def _write_variable(data: h5py.File, name: str, array: np.ndarray) -> None:
    """One MATLAB variable: axes reversed, gzip-chunked, with its MATLAB_class."""
    reversed_axes = np.ascontiguousarray(array.transpose(tuple(range(array.ndim))[::-1]))
    dataset = data.create_dataset(name, data=reversed_axes, compression="gzip")
    dataset.attrs.create("MATLAB_class", np.bytes_(MATLAB_CLASSES[array.dtype.type]))


def write_labelled_mat(
    folder: Path,
    images: np.ndarray,
    depths: np.ndarray,
    train_idx,
    test_idx,
    *,
    omit: tuple[str, ...] = (),
    splits: bool = True,
) -> Path:
    """folder/nyu_depth_v2_labeled.mat (+ splits.mat) of images [N, H, W, 3] uint8 and depths
    [N, H, W] float32 metres; train_idx / test_idx are 1-based. `omit` drops variables."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "nyu_depth_v2_labeled.mat"
    matlab = {  # MATLAB's own axis order: H x W x 3 x N and H x W x N
        "images": images.transpose(1, 2, 3, 0),
        "depths": depths.transpose(1, 2, 0).astype(np.float32),
        "rawDepths": np.where(depths > 1.0, depths, 0).transpose(1, 2, 0).astype(np.float32),
        "labels": (np.arange(depths.size) % 895)
        .astype(np.uint16)
        .reshape(depths.shape[1:] + (-1,)),
    }
    with h5py.File(path, "w", userblock_size=USERBLOCK) as data:
        for name, array in matlab.items():
            if name not in omit:
                _write_variable(data, name, np.ascontiguousarray(array))
    header = MATLAB_HEADER.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    with open(path, "r+b") as handle:
        handle.write(header)
    if splits:
        write_splits(folder, train_idx, test_idx)
    return path


def write_splits(folder: Path, train_idx, test_idx) -> Path:
    """folder/splits.mat: trainNdxs and testNdxs as 1-based float64 column vectors."""
    path = folder / "splits.mat"
    columns = {
        "trainNdxs": np.asarray(train_idx, np.float64).reshape(-1, 1),
        "testNdxs": np.asarray(test_idx, np.float64).reshape(-1, 1),
    }
    scipy.io.savemat(path, columns)
    return path


def write_frames(
    folder: Path, images: np.ndarray, depths: np.ndarray, scenes: list[str], *, listed=True
) -> Path:
    """BTS's sync/ folder: <scene>/rgb_NNNNN.jpg and sync_depth_NNNNN.png (uint16 millimetres,
    0 = no measurement), frame n in scenes[n], and (if `listed`) the train list file."""
    sync = folder / "sync"
    lines, counters = [], {}
    for image, depth, scene in zip(images, depths, scenes):
        number = counters.setdefault(scene, 0)
        counters[scene] += 1
        (sync / scene).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(sync / scene / f"rgb_{number:05d}.jpg", quality=95)
        millimetres = np.round(depth * 1000.0).astype(np.uint16)
        Image.fromarray(millimetres).save(sync / scene / f"sync_depth_{number:05d}.png")
        lines.append(f"/{scene}/rgb_{number:05d}.jpg /{scene}/sync_depth_{number:05d}.png 518.8579")
    if listed:
        (sync / "nyudepthv2_train_files_with_gt.txt").write_text("\n".join(lines) + "\n")
    return sync
