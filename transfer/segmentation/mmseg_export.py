"""Export a backbone for mmsegmentation: a tensor-only checkpoint and a ready-to-run config.

    python -m transfer.export mmseg --ckpt RUN/exports/backbone-3f2a9c1d.pt --data-root VOC2012/
    python -m transfer.export mmseg --ckpt ... --protocol ade20k-semfpn-80k/1 --nproc 4
    # then, in an mmsegmentation 1.x checkout:  tools/dist_train.sh OUT/<config>.py 8

Writes into `--out` (default: `mmseg/` beside the checkpoint):
  backbone-<sha8>-mmseg.pth   {"state_dict": ResNet keys -> tensors, "meta": plain metadata}; loads
                              with torch.load(weights_only=True), as torch >= 2.6 does by default
  <protocol>-<sha8>.py        configs/mmseg_*.py with its BYOL-BENCH block filled in:
                              mmseg's plain `ResNet` (our torchvision key names, not ResNetV1c's
                              deep stem), or for the ViT protocols (selfpatch-ade20k-*-vit-*)
                              mmseg's `VisionTransformer`, with init_cfg=dict(type="Pretrained",
                              checkpoint=...)
Our ResNets' keys are torchvision's minus `fc.*`, which are mmseg ResNet's keys: every tensor
maps by name, and the export checks that the set is complete. Width-multiplied ResNets, R200 and
the CIFAR stem have no mmseg ResNet counterpart and are refused. ViTs are renamed as mmseg's
vit2mmseg.py does (transfer/segmentation/mmseg_vit.py). A protocol refuses the other family.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import torch

from evaluate import harness
from evaluate.features import load_encoder
from pretrain.backbones import external_engine_problem
from pretrain.checkpoint import CheckpointError
from pretrain.data import dataset_stats
from results.atomic import write_atomic
from transfer.segmentation.mmseg_vit import mmseg_vit_state_dict, vit_config_values
from transfer.segmentation.protocols import (
    PROTOCOLS,
    SegmentationProtocol,
    refusal_alternatives,
    with_crop,
)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
TEMPLATES = {  # protocol -> config template
    "byol-paper-fcn/1": CONFIG_DIR / "mmseg_fcn_voc12aug.py",
    "ade20k-semfpn-80k/1": CONFIG_DIR / "mmseg_semfpn_ade20k.py",
    "selfpatch-ade20k-semfpn-vit-40k/1": CONFIG_DIR / "mmseg_semfpn_vit_ade20k.py",
    "selfpatch-ade20k-upernet-vit-160k/1": CONFIG_DIR / "mmseg_upernet_vit_ade20k.py",
}
MMSEG_DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101, "resnet152": 152}
BEGIN, END = "# BYOL-BENCH BEGIN\n", "# BYOL-BENCH END\n"
DEFAULT_DATA_ROOTS = {
    "voc2012": "data/VOCdevkit/VOC2012",
    "ade20k": "data/ade/ADEChallengeData2016",
}


def mmseg_state_dict(state_dict: dict[str, torch.Tensor], arch: str) -> dict[str, torch.Tensor]:
    """The backbone's tensors under mmseg ResNet(depth) names (the same names), checked complete."""
    from evaluate.strict_load import check_keys
    from pretrain.backbones import build_backbone

    with torch.device("meta"):
        reference, _ = build_backbone(arch)
    expected = {key: tuple(value.shape) for key, value in reference.state_dict().items()}
    check_keys(expected, state_dict, f"backbone for mmseg ResNet-{MMSEG_DEPTHS[arch]}")
    return {key: value.detach().cpu().clone().contiguous() for key, value in state_dict.items()}


def render_config(protocol: str, values: dict) -> str:
    """The protocol's template with its BYOL-BENCH block replaced by `values` (name = repr)."""
    template = TEMPLATES[protocol].read_text()
    head, rest = template.split(BEGIN)
    _, tail = rest.split(END)
    block = "".join(f"{name} = {value!r}\n" for name, value in values.items())
    return head + BEGIN + block + END + tail


def export(
    ckpt: str,
    protocol: str = "byol-paper-fcn/1",
    out: str | Path | None = None,
    *,
    arch: str | None = None,
    **settings,
) -> tuple[Path, Path]:
    """Load `ckpt` (any format load_encoder reads) and `export_encoder` it (default `out`:
    mmseg/ beside the checkpoint file)."""
    encoder, metadata = load_encoder(ckpt, arch)
    ckpt_path = Path(ckpt)
    if out is None:
        out = (ckpt_path.parent if ckpt_path.is_file() else Path(".")) / "mmseg"
    return export_encoder(encoder, metadata, protocol, out, **settings)


def _checked_settings(metadata: dict, protocol: str, gpus: int) -> SegmentationProtocol:
    """The protocol's settings, once the protocol, the process count and the weights fit mmseg."""
    if protocol not in TEMPLATES:
        raise harness.InputError(
            f"unknown protocol {protocol!r}; use one of {', '.join(TEMPLATES)}"
        )
    settings: SegmentationProtocol = PROTOCOLS[protocol]()
    if gpus < 1 or settings.batch_size % gpus:
        raise harness.InputError(f"--nproc must divide the protocol's batch {settings.batch_size}")
    problem = external_engine_problem(
        metadata, protocol, settings.backbone, refusal_alternatives(settings.backbone)
    )
    if problem:
        raise CheckpointError(problem)
    if settings.backbone == "vit":
        return settings
    if metadata["arch"] not in MMSEG_DEPTHS or metadata.get("cifar_stem"):
        stem = " (CIFAR stem)" if metadata.get("cifar_stem") else ""
        raise CheckpointError(
            f"{metadata.get('path') or metadata['label']} is a {metadata['arch']}{stem}; mmseg's "
            f"ResNet has depths {sorted(MMSEG_DEPTHS.values())} with the 7x7 stem only (use "
            "--engine torchvision for this backbone)"
        )
    return settings


def export_encoder(
    encoder: torch.nn.Module,
    metadata: dict,
    protocol: str,
    out: str | Path,
    *,
    data_root: str | None = None,
    lr: float | None = None,
    seed: int = 0,
    gpus: int = 8,
    iterations: int | None = None,
    crop: int | None = None,
    work_dir: str | None = None,
    ann_files: dict[str, str] | None = None,
    mean_std: tuple | None = None,
) -> tuple[Path, Path]:
    """Write the checkpoint and config of a loaded backbone for `protocol`; returns (checkpoint
    path, config path). `metadata` is load_encoder's (arch, weights_sha256, preprocessing...)."""
    settings = _checked_settings(metadata, protocol, gpus)
    settings = with_crop(settings, crop or settings.crop)
    sha8 = metadata["weights_sha256"][:8]
    out_dir = Path(out)
    weights_path = _write_weights(
        encoder, settings, metadata, out_dir / f"backbone-{sha8}-mmseg.pth"
    )
    stats = metadata.get("preprocessing") or {}
    mean, std = (stats["mean"], stats["std"]) if stats else dataset_stats("imagenet")
    mean, std = mean_std or (mean, std)  # 0..1 scale, as pretrain/data.py states them
    slug = f"{protocol.replace('/', '-v')}-{sha8}"
    if settings.backbone == "vit":
        architecture = vit_config_values(encoder, settings)
    else:
        architecture = {"depth": MMSEG_DEPTHS[metadata["arch"]], **_widths(encoder, settings)}
    values = {
        "checkpoint_file": str(weights_path),
        **architecture,
        "num_classes": 21 if settings.dataset == "voc2012" else 150,
        "mean": [round(255 * m, 4) for m in mean],
        "std": [round(255 * s, 4) for s in std],
        "data_root": str(data_root or DEFAULT_DATA_ROOTS[settings.dataset]),
        **(ann_files if ann_files is not None else _default_ann_files(settings)),
        "lr": float(lr if lr is not None else _default_lr(settings)),
        "seed": seed,
        "iterations": iterations or settings.iterations,
        "samples_per_gpu": settings.batch_size // gpus,
        "crop": settings.crop,
        **({"base_size": settings.base_size} if settings.base_size else {}),
        "norm_type": "SyncBN" if gpus > 1 else "BN",
        "work_dir": work_dir or f"work_dirs/{slug}",
    }
    config_path = out_dir / f"{slug}.py"
    write_atomic(config_path, render_config(protocol, values).encode())
    return weights_path, config_path


def _write_weights(
    encoder: torch.nn.Module, settings: SegmentationProtocol, metadata: dict, path: Path
) -> Path:
    """mmseg's tensor-only checkpoint: {"state_dict": mmseg names, "meta": provenance}."""
    if settings.backbone == "vit":
        state_dict = mmseg_vit_state_dict(encoder.state_dict(), len(encoder.blocks))
    else:
        state_dict = mmseg_state_dict(encoder.state_dict(), metadata["arch"])
    meta = {
        key: metadata.get(key)
        for key in (
            "weights_sha256",
            "label",
            "arch",
            "method",
            "source",
            "pretrain_epochs",
            "path",
        )
    }
    meta = json.loads(json.dumps(meta))  # plain types only
    buffer = io.BytesIO()
    torch.save({"state_dict": state_dict, "meta": {**meta, "format": "byol-bench.mmseg/1"}}, buffer)
    path = path.resolve()
    write_atomic(path, buffer.getvalue())
    return path


def _widths(encoder, settings: SegmentationProtocol) -> dict:
    layers = [encoder.layer1, encoder.layer2, encoder.layer3, encoder.layer4]
    widths = [layer[-1].conv1.in_channels for layer in layers]
    return {"feature_dim": widths[-1]} if settings.head == "fcn" else {"stage_channels": widths}


def _default_ann_files(settings: SegmentationProtocol) -> dict:
    if settings.dataset != "voc2012":
        return {}
    return {
        "train_ann_file": "ImageSets/Segmentation/train_aug.txt",
        "train_seg_dir": "SegmentationClassAug",
        "val_ann_file": "ImageSets/Segmentation/val.txt",
        "val_seg_dir": "SegmentationClass",
    }


def _default_lr(settings: SegmentationProtocol) -> float:
    """The protocol's only LR, or the middle of its sweep (choose one with --lr)."""
    return settings.lrs[len(settings.lrs) // 2]


def main(argv: list[str] | None = None) -> None:
    """`python -m transfer.export mmseg ...` (argv: the arguments after `mmseg`)."""
    parser = argparse.ArgumentParser(
        prog="python -m transfer.export mmseg",
        description=__doc__.split("\n")[0],
        allow_abbrev=False,
    )
    add = parser.add_argument
    add(
        "--ckpt",
        required=True,
        help="an export, a training checkpoint or a torchvision ResNet state dict "
        "(resnet18/34/50/101/152); a ViT export for the selfpatch-ade20k-*-vit-* protocols",
    )
    add("--protocol", default="byol-paper-fcn/1", choices=list(TEMPLATES), help="config preset")
    add("--out", help="output directory (default: mmseg/ beside --ckpt)")
    add("--arch", help="architecture of foreign weights (default: inferred)")
    add("--data-root", help="data set root in the config (default: mmseg's data/... layout)")
    add("--lr", type=float, help="learning rate (default: the protocol's, or its sweep's middle)")
    add("--seed", type=int, default=0, help="randomness seed in the config (default 0)")
    add(
        "--nproc",
        type=int,
        default=8,
        help="processes (one per GPU) the exported config's batch is split over: the GPUS of "
        "mmseg's tools/dist_train.sh (default 8; 1: BN instead of SyncBN)",
    )
    add("--max-steps", type=int, help="shorten: training iterations (default: the protocol's)")
    add("--work-dir", help="mmseg work_dir in the config (default work_dirs/<protocol>-<sha8>)")
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(arg.split("=")[0] == "--gpus" for arg in argv):
        parser.error("--gpus is now --nproc: processes the exported config's batch is split over")
    settings = vars(parser.parse_args(argv))  # export()'s keywords, two of them renamed here:
    settings["gpus"], settings["iterations"] = settings.pop("nproc"), settings.pop("max_steps")
    with harness.error_boundary():
        weights, config = export(**settings)
    print(f"mmseg checkpoint {weights}\nmmseg config     {config}")
