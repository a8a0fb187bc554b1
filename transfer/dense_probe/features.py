"""A frozen encoder's dense feature maps of every image at one fixed test view, cached on disk.

The view (`DenseView`): the shorter side resized to `size` (image bilinear with antialiasing, target
nearest), then a centre crop of size x size, the classification probe's test-view idea (BYOL v3,
App. C.1: resize + centre crop; evaluate/transforms.py) with DINOv2's 512 px segmentation crop
(DINOv2 ADE20K linear config, crop_size (512, 512); the issue-17 facts sheet "depth-nyu", §7) as the
segmentation default. `crop=False` keeps the whole resized image instead, for data sets whose images
share one size (NYU's 480 x 640, which DINOv2 tests whole); a set whose views differ in size is
refused. The target (labels, or depth) is kept beside the features at the view's resolution, so the
probe is scored on the view's pixels.

The map is one of maps.py (a ResNet's conv5, `conv5_map` by default, or a ViT's patch grid),
named in the key: a ResNet's and a ViT's maps, or two maps of one ViT, never share an entry.

The cache is evaluate/features.py's (cache_path: one naming rule, $BYOL_BENCH_CACHE): the key
holds (weights_sha256, data set, the image set's fingerprint, split, view id, feature map), and
three files share its stem: `.features.npy` (float16 [N, C, h, w], read as a memory map),
`.targets.npy` ([N, H, W], uint8 labels or float32 depths) and `.json` (format and key, written
last: a cache entry without it is unfinished and made again). One backbone pass serves every head
and every LR of the probes.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from evaluate.features import cache_path
from pretrain.augment import normalize
from pretrain.data import DataError
from results.atomic import write_atomic
from transfer.dense_probe.maps import FeatureMap, conv5_map
from transfer.segmentation.augment import centre_crop

DENSE_FEATURES_FORMAT = "byol-bench.dense-features/1"
log = logging.getLogger(__name__)


class DenseSet(Protocol):
    """What the cache reads: transfer/segmentation/data.py:SegmentationSet, a depth set alike."""

    name: str
    split: str

    def __len__(self) -> int: ...

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]: ...  # uint8 [3,H,W], [H,W]

    def fingerprint(self) -> str: ...


@dataclass(frozen=True)
class DenseView:
    """The fixed test view of every image (see the module docstring)."""

    size: int  # shorter side after resizing, px (and the crop's side)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop: bool = True  # False: the whole resized image

    @property
    def view_id(self) -> str:
        """Names the view in cache keys and records."""
        mean, std = ",".join(f"{m:.4f}" for m in self.mean), ",".join(f"{s:.4f}" for s in self.std)
        kind = "centrecrop" if self.crop else "whole"
        return f"dense-{kind}/1:size={self.size},mean={mean},std={std}"

    def apply(self, image: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalised image [3, h, w], target [h, w]) of uint8 image [3, H, W], target [H, W]."""
        pixels, target = self.resized(image, target)
        return normalize(pixels / 255.0, self.mean, self.std), target

    def resized(
        self, image: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(float image [3, h, w] in 0..255, target [h, w]): the view before normalisation."""
        height, width, dtype = *image.shape[-2:], target.dtype
        scale = self.size / min(height, width)
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        pixels = F.interpolate(
            image[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True
        )[0]
        target = F.interpolate(target[None, None].float(), size=size, mode="nearest")[0, 0]
        target = target.to(dtype)
        if self.crop:
            pixels, target = centre_crop(pixels, target, self.size)
        return pixels.clamp(0, 255), target


class ViewPairs(Dataset):
    """(view image, view target) of every pair of a DenseSet, in order."""

    def __init__(self, images: DenseSet, view: DenseView) -> None:
        self.images, self.view = images, view

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.view.apply(*self.images.load(index))


@dataclass
class DenseFeatures:
    """Cached maps and targets of one image set (numpy arrays; memory maps when read back)."""

    features: np.ndarray  # float16 [N, C, h, w]
    targets: np.ndarray  # [N, H, W]
    key: dict

    def __len__(self) -> int:
        return len(self.features)


def cached_dense_features(
    encoder: nn.Module,
    weights_sha: str,
    images: DenseSet,
    view: DenseView,
    *,
    target_dtype: type = np.uint8,
    feature_map: FeatureMap = conv5_map,
    cache_dir: str | Path | None = None,
    batch_size: int = 16,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
) -> DenseFeatures:
    """The dense features of `images` under `view`, read from the cache or extracted once."""
    key = {
        "weights_sha256": weights_sha,
        "dataset": images.name,
        "data": images.fingerprint(),
        "split": images.split,
        "transform": view.view_id,
        "feature_map": getattr(feature_map, "__name__", str(feature_map)),
        "target_dtype": np.dtype(target_dtype).name,
    }
    stem = cache_path(key, cache_dir, "")
    paths = {part: stem.with_name(f"{stem.name}.{part}.npy") for part in ("features", "targets")}
    meta = stem.with_name(f"{stem.name}.json")
    cached = _read(meta, paths, key, len(images))
    if cached is not None:
        log.info("dense features of %s/%s from the cache %s", images.name, images.split, meta)
        return cached
    pairs = ViewPairs(images, view)
    _extract(encoder, pairs, paths, feature_map, target_dtype, batch_size, num_workers, device)
    write_atomic(meta, json.dumps({"format": DENSE_FEATURES_FORMAT, "key": key}).encode())
    return _read(meta, paths, key, len(images))


def _read(meta: Path, paths: dict, key: dict, count: int) -> DenseFeatures | None:
    """The cache entry if complete and of `key`, else None (a miss, never an error)."""
    if not meta.is_file() or not all(path.is_file() for path in paths.values()):
        return None
    try:
        stored = json.loads(meta.read_text())
        features = np.load(paths["features"], mmap_mode="r")
        targets = np.load(paths["targets"], mmap_mode="r")
    except (OSError, ValueError) as error:
        log.warning("ignoring unreadable dense-feature cache %s (%s)", meta, error)
        return None
    if stored.get("format") != DENSE_FEATURES_FORMAT or stored.get("key") != key:
        log.warning("ignoring dense-feature cache %s: its key differs", meta)
        return None
    if len(features) != count or len(targets) != count:
        return None
    return DenseFeatures(features, targets, key)


@torch.no_grad()
def _extract(encoder, pairs, paths, feature_map, target_dtype, batch_size, num_workers, device):
    """Write the maps and targets of every pair into memory-mapped .npy files (tmp, then
    os.replace), batch by batch: the whole set never sits in memory."""
    device = torch.device(device)
    encoder.to(device).eval()
    loader = DataLoader(pairs, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    files, done = {}, 0
    tmp = {part: path.with_name(f"{path.name}.tmp-{os.getpid()}") for part, path in paths.items()}
    try:
        for images, targets in tqdm(loader, desc=f"dense features {pairs.images.split}"):
            maps = feature_map(encoder, images.to(device)).half().cpu().numpy()  # [B, C, h, w]
            if not files:
                tmp["features"].parent.mkdir(parents=True, exist_ok=True)
                shapes = {"features": maps.shape[1:], "targets": tuple(targets.shape[1:])}
                dtypes = {"features": np.float16, "targets": target_dtype}
                files = {
                    part: np.lib.format.open_memmap(
                        tmp[part], "w+", dtypes[part], (len(pairs), *shapes[part])
                    )
                    for part in paths
                }
            files["features"][done : done + len(maps)] = maps
            files["targets"][done : done + len(maps)] = targets.numpy().astype(target_dtype)
            done += len(maps)
        for part, array in files.items():
            array.flush()
            os.replace(tmp[part], paths[part])
    except RuntimeError as error:  # default collate: views of different sizes
        if "stack expects each tensor to be equal size" not in str(error):
            raise
        raise DataError(
            f"the images of {pairs.images.name}/{pairs.images.split} give views of different "
            "sizes; use a centre-crop view (DenseView(crop=True))"
        ) from error
    finally:
        for path in tmp.values():
            path.unlink(missing_ok=True)
