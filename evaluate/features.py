"""Frozen encoders from any supported weights file, and their features with an on-disk cache.

`load_encoder(spec, arch=None)` accepts, in this order of detection:
  - `random:<arch>[:cifar]`: the architecture at its seeded initialisation, the baseline of every
    SSL table (torch.manual_seed(seed), then build_backbone, exactly as pretrain/train.py builds the
    online encoder, so seed 0 gives the starting point of a seed-0 pretraining run);
  - an export of ours (`byol-bench.backbone/1`): metadata from the file, weights_sha256 re-computed
    and compared (a damaged file is refused);
  - a full training checkpoint of ours (`byol-bench.checkpoint/1`): the online encoder, with the
    export's metadata computed on the fly (same weights_sha256 as the export of the same step);
  - anything else goes to the importers (evaluate/importers/load.py:load_foreign), one path for
    every foreign file: the authors' BYOL release, MoCo, DINO, SwAV, solo-learn, lightly,
    mmselfsup, VISSL and torchvision / timm ResNet state dicts (bare or under "state_dict" /
    "model"; `fc.*`, the supervised classifier, dropped), auto-detected and read without
    executing anything; a file matching no format is refused with the list of formats. The
    network is the one the library's authors evaluate (choose another with python -m
    evaluate.convert --network); arch from `arch` or inferred from the key shapes.
The encoder is built with the padding mode and stem padding the metadata states (the authors'
Haiku ResNet needs TF "SAME" padding); an export converted from a file and the file itself give
the same weights_sha256 and the same features.
`extract_features` runs a frozen encoder over a data set; `cached_features` keeps the result on
disk, keyed by (weights_sha256, data set, split, transform id), so the fast probe and kNN reuse it.

Loading is strict (docs/architecture.md, Conventions, rule 18): keys are mapped explicitly,
compared with the model's, and any missing, unexpected or mis-shaped key raises CheckpointError
naming them; then strict=True.
The encoder comes back in eval mode with requires_grad False: BN statistics and weights frozen, as
the linear protocol requires (BYOL v3, App. C.1).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from evaluate.importers import load_foreign, safe_load
from evaluate.splits import data_fingerprint
from evaluate.strict_load import build_strict, infer_arch, parse_arch
from evaluate.transforms import Preprocessing
from pretrain.backbones import build_backbone, is_vit, vit_options
from pretrain.checkpoint import (
    CHECKPOINT_FORMAT,
    EXPORT_FORMAT,
    CheckpointError,
    load_checkpoint,
    weights_sha256,
)
from pretrain.data import DataError, ImageDataset
from pretrain.export_metadata import backbone_metadata
from pretrain.methods import exported_encoder
from results.atomic import write_atomic

RANDOM_PREFIX = "random:"
FEATURES_FORMAT = "byol-bench.features/1"
CACHE_ENV = "BYOL_BENCH_CACHE"  # overrides the default feature-cache directory
log = logging.getLogger(__name__)


def load_encoder(spec: str, arch: str | None = None, *, seed: int = 0) -> tuple[nn.Module, dict]:
    """(frozen eval-mode encoder, metadata) for `spec` (see the module docstring).

    metadata has at least: weights_sha256, label, arch, cifar_stem, feature_dim, method, source,
    pretrain_epochs, path, padding, stem_padding and preprocessing ({image_size, mean, std, and
    for imported files resize_interpolation, antialias} or None when unknown).
    """
    if spec.startswith(RANDOM_PREFIX):
        return _random_encoder(spec[len(RANDOM_PREFIX) :], seed)
    path = Path(spec)
    if path.is_dir():
        raise CheckpointError(
            f"--ckpt {path} is a directory: a run directory stands for its checkpoint series, "
            "which evaluate.knn and evaluate.linear --fast take; here pass one file (e.g. "
            f"{path}/exports/backbone-<sha8>.pt)"
        )
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist; pass --ckpt with an export "
            "(<run>/exports/backbone-*.pt), a training checkpoint, another library's checkpoint "
            "(python -m evaluate.convert --help lists the formats), or random:<arch> for a "
            "random-initialisation baseline"
        )
    blob = _our_file(path)
    if blob is not None and blob.get("format") == EXPORT_FORMAT:
        state_dict, metadata = _from_export(blob, path)
    elif blob is not None and blob.get("format") == CHECKPOINT_FORMAT:
        state_dict, metadata = _from_training_checkpoint(path)
    else:  # another library's file (torchvision/timm included): the importers, one path
        name = None if arch is None else parse_arch(arch)[0]
        state_dict, metadata = load_foreign(path, arch=name)
    if arch is not None:
        metadata["arch"], metadata["cifar_stem"] = parse_arch(arch)
    elif metadata.get("arch") is None:
        metadata["arch"], metadata["cifar_stem"] = infer_arch(state_dict, path)
    encoder = build_strict(
        metadata["arch"],
        bool(metadata.get("cifar_stem")),
        state_dict,
        path,
        padding=metadata.setdefault("padding", "torchvision"),
        stem_padding=metadata.setdefault("stem_padding", None),
        vit_options=vit_options(metadata),
    )
    if is_vit(metadata["arch"]):  # what the ViT was built with, for the records
        metadata.update(vit_options(metadata), patch_size=encoder.patch_size)
    metadata.update(weights_sha256=weights_sha256(state_dict), path=str(path.resolve()))
    metadata["feature_dim"] = encoder.feature_dim
    return freeze(encoder), metadata


def freeze(encoder: nn.Module) -> nn.Module:
    """Eval mode (BN uses its running statistics) and no gradients, in place."""
    encoder.eval()
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    return encoder


def _our_file(path: Path) -> dict | None:
    """The dict of a torch file that loads with weights_only=True, else None (a pickle, another
    library's file with pickled objects, or a damaged file: load_foreign reads and judges it)."""
    if safe_load.sniff(path) != "torch":
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # truncated zip, garbage, pickled objects: the importers say which
        return None
    return blob if isinstance(blob, dict) else None


def _random_encoder(arch: str, seed: int) -> tuple[nn.Module, dict]:
    name, cifar_stem = parse_arch(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder, feature_dim = build_backbone(name, cifar_stem=cifar_stem)
    metadata = {
        "label": f"random-init {arch}",
        "arch": name,
        "cifar_stem": cifar_stem,
        "feature_dim": feature_dim,
        "method": "random-init",
        "source": "random-init",
        "pretrain_epochs": 0,
        "init_seed": seed,
        "preprocessing": None,
        "padding": "torchvision",
        "stem_padding": None,
        "weights_sha256": weights_sha256(encoder.state_dict()),
        "path": None,
    }
    if is_vit(name):
        metadata.update(vit_options(metadata), patch_size=encoder.patch_size)
    return freeze(encoder), metadata


def _from_export(blob: dict, path: Path) -> tuple[dict, dict]:
    state_dict, metadata = blob.get("state_dict"), dict(blob.get("metadata") or {})
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{path}: {EXPORT_FORMAT} file without a state_dict (damaged)")
    declared = metadata.get("weights_sha256")
    if declared is not None and declared != weights_sha256(state_dict):
        raise CheckpointError(f"{path}: weights do not match their weights_sha256 (damaged file)")
    return state_dict, metadata


def _from_training_checkpoint(path: Path) -> tuple[dict, dict]:
    """The encoder a full checkpoint's run exports (BYOL's online one, DINO's teacher:
    pretrain/methods.py exported_encoder), with the metadata pretrain/train.py exports."""
    state = load_checkpoint(path)  # verifies the digest
    prefix = exported_encoder(state["config"].get("method", "byol")) + "."
    state_dict = {k[len(prefix) :]: v for k, v in state["model"].items() if k.startswith(prefix)}
    if not state_dict:
        raise CheckpointError(f"{path}: training checkpoint without {prefix}* weights")
    config, step, epoch = state["config"], int(state["step"]), int(state["epoch"])
    start_step = int(state.get("sampler", {}).get("start_step", 0))
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    probe_weight = state.get("probe", {}).get("weight")
    metadata = backbone_metadata(
        config,
        label=run_dir.name,
        step=step,
        steps_per_epoch=(step - start_step) / epoch if epoch > 0 else None,
    )
    metadata["pretrain_num_classes"] = None if probe_weight is None else int(probe_weight.shape[0])
    return state_dict, metadata


# ---------------------------------------------------------------------------------------------
# Features


def default_cache_dir() -> Path:
    """Where cached features go: $BYOL_BENCH_CACHE, else ~/.cache/byol-bench/features."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "byol-bench" / "features")


def cache_path(key: dict, cache_dir: str | Path | None, suffix: str) -> Path:
    """The cache file of `key` (which holds at least dataset, split and weights_sha256):
    `<cache dir>/<dataset>-<split>-<sha8>-<digest of the whole key>` + `suffix`. One naming rule
    for every cached representation (pooled features here, dense maps in
    transfer/dense_probe/features.py)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    split = re.sub(r"[^A-Za-z0-9.]+", "-", key["split"])
    name = f"{key['dataset']}-{split}-{key['weights_sha256'][:8]}-{digest[:16]}"
    return Path(cache_dir or default_cache_dir()) / f"{name}{suffix}"


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    desc: str = "features",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [N, D] float32 and labels [N] int64 (on CPU) of every (image, label) in order."""
    if len(dataset) == 0:
        raise DataError(f"no images to extract {desc} from")
    device = torch.device(device)
    encoder.to(device)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    features, labels = [], []
    with tqdm(total=len(dataset), desc=desc, unit="img", dynamic_ncols=True) as bar:
        for images, targets in loader:
            features.append(encoder(images.to(device, non_blocking=True)).float().cpu())  # [B, D]
            labels.append(targets)
            bar.update(len(targets))
    return torch.cat(features), torch.cat(labels).long()


def cached_features(
    encoder: nn.Module,
    weights_sha: str,
    images: ImageDataset,
    split: str,
    preprocessing: Preprocessing,
    *,
    cache_dir: str | Path | None = None,
    feature_kind: str | None = None,
    **extract_kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`extract_features` of the test view of `images`, read from / written to the cache.

    The file name and its stored key hold (weights_sha256, data set, split, transform id) plus a
    fingerprint of the images (data_fingerprint), and `feature_kind` when the encoder gives
    another feature than its pooled one (evaluate/dino_linear.py); a file whose key or labels
    differ is re-made.
    """
    key = {
        "weights_sha256": weights_sha,
        "dataset": images.name,
        "data": data_fingerprint(images),
        "split": split,
        "transform": preprocessing.eval_id,
    }
    if feature_kind is not None:  # absent for the pooled feature: older cache files stay valid
        key["features"] = feature_kind
    path = cache_path(key, cache_dir, ".pt")
    cached = _read_cache(path, key, images.targets)
    if cached is not None:
        log.info("features of %s/%s from the cache %s", images.name, split, path)
        return cached
    desc = f"features {images.name}/{split}"
    features, labels = extract_features(
        encoder, preprocessing.eval_dataset(images), desc=desc, **extract_kwargs
    )
    blob = {"format": FEATURES_FORMAT, "key": key, "features": features, "labels": labels}
    buffer = io.BytesIO()
    torch.save(blob, buffer)
    write_atomic(path, buffer.getvalue())
    return features, labels


def _read_cache(path: Path, key: dict, targets: list[int]):
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        valid = blob["format"] == FEATURES_FORMAT and blob["key"] == key
        valid = valid and blob["labels"].tolist() == list(targets)
    except Exception as error:  # a damaged cache file is only a cache miss
        log.warning("ignoring unreadable feature cache %s (%s)", path, error)
        return None
    if not valid:
        log.warning("ignoring feature cache %s: its key or labels differ", path)
        return None
    return blob["features"], blob["labels"]
