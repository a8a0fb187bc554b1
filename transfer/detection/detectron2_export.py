"""Export a backbone to detectron2: a weights .pkl in detectron2's ResNet names and the YAML of
MoCo's VOC07+12 R50-C4 protocol (`moco-detectron2-c4-24k/1`).

    python -m transfer.export detectron2 --ckpt RUN/exports/backbone-3f2a9c1d.pt [--out DIR]

writes DIR/<stem>-detectron2.pkl and DIR/<stem>-voc0712-c4-24k.yaml (default DIR: beside the
checkpoint). Train with detectron2 (installed from source) and MoCo's train_net.py, or with
`python -m transfer.detection --engine detectron2`, which registers the same RoI head:

    python moco/detection/train_net.py --config-file DIR/<stem>-voc0712-c4-24k.yaml --num-gpus 8

The .pkl is what detectron2's converters write (tools/convert-torchvision-to-d2.py,
moco/detection/convert-pretrain-to-detectron2.py): a pickled dict {"model": {name: numpy array},
"__author__": ..., "matching_heuristics": True} with torchvision's ResNet keys renamed:
conv1/bn1 -> stem.conv1(.norm), layerN -> res(N+1), bnK -> convK.norm, downsample.0/1 ->
shortcut(.norm). `from_detectron2` inverts the renaming exactly.
"""

from __future__ import annotations

import argparse
import pickle
import re
from pathlib import Path

import torch

from evaluate import harness
from evaluate.features import load_encoder
from pretrain.augment import IMAGENET_MEAN, IMAGENET_STD
from pretrain.backbones import external_engine_problem
from pretrain.checkpoint import CheckpointError
from transfer.detection.protocols import moco_detectron2_c4_24k

AUTHOR = "byol-bench"
# detectron2's ResNet depths (detectron2/modeling/backbone/resnet.py, build_resnet_backbone)
_DEPTHS = {"resnet50": 50, "resnet101": 101, "resnet152": 152, "resnet50x2": 50, "resnet50x4": 50}
_WIDTH = {"resnet50x2": 2, "resnet50x4": 4}


def to_detectron2_key(key: str) -> str:
    """torchvision ResNet key -> detectron2 ResNet key (as tools/convert-torchvision-to-d2.py)."""
    if "layer" not in key:
        key = "stem." + key
    for stage in (1, 2, 3, 4):
        key = key.replace(f"layer{stage}", f"res{stage + 1}")
    for index in (1, 2, 3):
        key = key.replace(f"bn{index}", f"conv{index}.norm")
    return key.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


def from_detectron2_key(key: str) -> str:
    """detectron2 ResNet key -> torchvision ResNet key (the inverse of to_detectron2_key)."""
    key = key.replace("shortcut.norm", "downsample.1").replace("shortcut", "downsample.0")
    key = re.sub(r"conv(\d)\.norm", r"bn\1", key)
    key = re.sub(r"^res(\d)\.", lambda match: f"layer{int(match.group(1)) - 1}.", key)
    return key.removeprefix("stem.")


def to_detectron2(state_dict: dict[str, torch.Tensor]) -> dict:
    """The detectron2 checkpoint dict of a torchvision-named ResNet state dict."""
    model = {to_detectron2_key(k): v.detach().cpu().numpy() for k, v in state_dict.items()}
    return {"model": model, "__author__": AUTHOR, "matching_heuristics": True}


def from_detectron2(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The torchvision-named state dict of a detectron2 checkpoint dict (`to_detectron2`'s)."""
    return {from_detectron2_key(k): torch.from_numpy(v) for k, v in checkpoint["model"].items()}


def yaml_unsupported(metadata: dict) -> str | None:
    """Why detectron2's C4 protocol cannot take these weights, or None if it can."""
    if metadata["arch"] in _DEPTHS and not metadata.get("cifar_stem"):
        return None
    return (
        "detectron2's C4 head (Res5ROIHeads) needs a bottleneck ResNet of depth 50/101/152 with "
        f"the ImageNet stem, not {metadata['arch']}"
        + (" (CIFAR stem)" if metadata.get("cifar_stem") else "")
    )


def _pixel_mean_std(metadata: dict) -> tuple[str, str]:
    """The weights' normalisation (ImageNet's if unknown) in detectron2's 0-255 pixel units."""
    known = metadata.get("preprocessing") or {}
    mean = known.get("mean", IMAGENET_MEAN)
    std = known.get("std", IMAGENET_STD)
    return tuple("[" + ", ".join(f"{255 * v:.3f}" for v in values) + "]" for values in (mean, std))


def detectron2_yaml(metadata: dict, weights: Path) -> str:
    """detectron2 config of protocol moco-detectron2-c4-24k/1 for these weights (module doc)."""
    arch = metadata["arch"]
    if yaml_unsupported(metadata):
        raise harness.InputError(yaml_unsupported(metadata))
    protocol = moco_detectron2_c4_24k()
    width = _WIDTH.get(arch, 1)
    mean, std = _pixel_mean_std(metadata)
    sizes = ", ".join(str(s) for s in protocol.train_sizes)
    steps = ", ".join(str(s) for s in protocol.lr_steps)
    return f"""\
# {protocol.name}: MoCo's VOC07+12 Faster R-CNN R50-C4 24k (moco/detection/configs/
# pascal_voc_R_50_C4_24k_moco.yaml + Base-RCNN-C4-BN.yaml), self-contained on detectron2's
# defaults. Weights: {metadata.get("label")} ({arch}, weights_sha256 {metadata["weights_sha256"]}).
# ROI_HEADS.NAME Res5ROIHeadsExtraNorm is registered by MoCo's detection/train_net.py and by
# `python -m transfer.detection --engine detectron2`.
MODEL:
  META_ARCHITECTURE: "GeneralizedRCNN"
  WEIGHTS: "{weights}"
  MASK_ON: False
  PIXEL_MEAN: {mean}
  PIXEL_STD: {std}
  BACKBONE:
    NAME: "build_resnet_backbone"
    FREEZE_AT: {protocol.freeze_at}
  RESNETS:
    DEPTH: {_DEPTHS[arch]}
    NORM: "SyncBN"
    STRIDE_IN_1X1: False
    OUT_FEATURES: ["res4"]
    STEM_OUT_CHANNELS: {64 * width}
    WIDTH_PER_GROUP: {64 * width}
    RES2_OUT_CHANNELS: {256 * width}
  RPN:
    PRE_NMS_TOPK_TEST: {protocol.rpn_pre_nms_test}
    POST_NMS_TOPK_TEST: {protocol.rpn_post_nms_test}
  ROI_HEADS:
    NAME: "Res5ROIHeadsExtraNorm"
    NUM_CLASSES: 20
INPUT:
  FORMAT: "RGB"
  MIN_SIZE_TRAIN: ({sizes})
  MAX_SIZE_TRAIN: {protocol.max_size}
  MIN_SIZE_TEST: {protocol.test_size}
  MAX_SIZE_TEST: {protocol.max_size}
DATASETS:
  TRAIN: ("voc_2007_trainval", "voc_2012_trainval")
  TEST: ("voc_2007_test",)
TEST:
  PRECISE_BN:
    ENABLED: True
SOLVER:
  IMS_PER_BATCH: {protocol.batch_size}
  BASE_LR: {protocol.base_lr}
  STEPS: ({steps})
  MAX_ITER: {protocol.max_iters}
  WARMUP_ITERS: {protocol.warmup_iters}
"""


def export(ckpt: str, out_dir: str | Path | None = None, arch: str | None = None):
    """Write the .pkl (always) and the YAML (if `yaml_unsupported` is None); returns
    (pkl path, yaml path or the reason there is none)."""
    encoder, metadata = load_encoder(ckpt, arch)
    problem = external_engine_problem(metadata)
    if problem:
        raise CheckpointError(problem)
    state_dict = encoder.state_dict()
    stem = Path(ckpt).stem
    directory = Path(out_dir) if out_dir else Path(ckpt).resolve().parent
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / f"{stem}-detectron2.pkl"
    with open(weights, "wb") as handle:
        pickle.dump(to_detectron2(state_dict), handle)
    if yaml_unsupported(metadata):
        return weights, f"none: {yaml_unsupported(metadata)}"
    config = directory / f"{stem}-voc0712-c4-24k.yaml"
    config.write_text(detectron2_yaml(metadata, weights.resolve()))
    return weights, config


def main(argv: list[str] | None = None) -> None:
    """`python -m transfer.export detectron2 ...` (argv: the arguments after `detectron2`)."""
    parser = argparse.ArgumentParser(
        prog="python -m transfer.export detectron2",
        description="Write a detectron2 weights .pkl and the YAML of moco-detectron2-c4-24k/1.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--ckpt",
        required=True,
        help="an export, a training checkpoint or a torchvision ResNet state dict",
    )
    parser.add_argument("--out", help="output directory (default: beside --ckpt)")
    parser.add_argument(
        "--arch", help="architecture of foreign weights, e.g. resnet50 (default: inferred)"
    )
    args = parser.parse_args(argv)
    with harness.error_boundary():
        weights, config = export(args.ckpt, args.out, args.arch)
    print(f"detectron2 weights -> {weights}")
    print(f"detectron2 config  -> {config}")
