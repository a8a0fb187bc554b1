"""THE list of checkpoint formats the importers read, what each looks like, and detection.

`FORMATS` is ordered: `detect` returns the first format whose `problems(blob)` is empty, so the
more specific layouts (MoCo's encoder_q, DINO's student/teacher, Lightning's heads) come before
the generic ones (any `module.*` file, torchvision names). `looks_like` is the sentence the
refusal of an unknown file and `python -m evaluate.convert --help` show.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from evaluate.importers import haiku_byol
from evaluate.importers import torch_layouts as layouts
from evaluate.importers.errors import ForeignCheckpointError

Extract = Callable[[Any, str], tuple[dict, dict]]


@dataclass(frozen=True)
class Format:
    """One checkpoint layout: its name, container, description, matcher and extractor."""

    name: str
    container: str  # "pickle" (raw pickle, restricted reader) or "torch" (weights_only)
    looks_like: str
    problems: Callable[[Any], list[str]]  # what the blob lacks to be this format; [] = it is
    extract: Extract  # (blob, network "online" | "target") -> (state dict, metadata)
    default_network: str = "online"  # the network the library's authors evaluate


FORMATS: tuple[Format, ...] = (
    Format(
        "byol-haiku",
        "pickle",
        "the authors' BYOL release (pretrain_res50x1.pkl): a dill pickle {experiment_state: "
        "(online_params, target_params, online_state, target_state, opt_state), step, rng} "
        "with Haiku names res_net50/~/...",
        haiku_byol.missing_fields,
        haiku_byol.extract_byol_release,
    ),
    Format(
        "moco-v3",
        "torch",
        "MoCo v3 ResNet: state_dict with module.base_encoder.* (and module.momentum_encoder.*)",
        layouts.moco_v3_problems,
        layouts.extract_moco_v3,
    ),
    Format(
        "moco",
        "torch",
        "MoCo v1/v2: state_dict with module.encoder_q.*, module.encoder_k.* and the queue",
        layouts.moco_problems,
        layouts.extract_moco,
    ),
    Format(
        "dino",
        "torch",
        "a DINO training checkpoint (ResNet or ViT): {student: module.backbone.*, teacher: "
        "backbone.*, args, ...}",
        layouts.dino_problems,
        layouts.extract_dino,
        default_network="target",  # DINO evaluates the teacher (Caron et al. 2021, Sec. 3.1)
    ),
    Format(
        "solo-learn",
        "torch",
        "a solo-learn Lightning .ckpt: state_dict with backbone.* and momentum_backbone.*, "
        "projector.* or classifier.*",
        layouts.solo_learn_problems,
        layouts.extract_solo_learn,
    ),
    Format(
        "lightly",
        "torch",
        "a lightly Lightning .ckpt: state_dict with backbone.* (teacher_backbone.*, "
        "backbone_momentum.* or student_backbone.*)",
        layouts.lightly_problems,
        layouts.extract_lightly,
    ),
    Format(
        "mmselfsup",
        "torch",
        "mmselfsup/mmpretrain: {state_dict: backbone.*, neck.*, head.*; meta}",
        layouts.mmselfsup_problems,
        layouts.extract_mmselfsup,
    ),
    Format(
        "vissl",
        "torch",
        "VISSL: classy_state_dict -> base_model -> model -> trunk with _feature_blocks.*",
        layouts.vissl_problems,
        layouts.extract_vissl,
    ),
    Format(
        "swav",
        "torch",
        "SwAV/DeepCluster-v2 (or any DDP-saved ResNet): every key module.*, with "
        "module.conv1.weight",
        layouts.swav_problems,
        layouts.extract_swav,
    ),
    Format(
        "vit",
        "torch",
        "a timm/DINO ViT state dict (cls_token, pos_embed, patch_embed.proj.weight, blocks.N.*; "
        "bare or under state_dict/model), e.g. DINO's dino_deitsmall16_pretrain.pth",
        layouts.vit_problems,
        layouts.extract_vit,
    ),
    Format(
        "torchvision",
        "torch",
        "a torchvision/timm ResNet state dict (conv1.weight, layer1.*, ...; bare or under "
        "state_dict/model), e.g. DINO's dino_resnet50_pretrain.pth",
        layouts.torchvision_problems,
        layouts.extract_torchvision,
    ),
)
BY_NAME = {fmt.name: fmt for fmt in FORMATS}


def formats_sentence() -> str:
    """Every format and what it looks like, for refusals and --help."""
    return "; ".join(f"{fmt.name} = {fmt.looks_like}" for fmt in FORMATS)


def detect(blob, container: str, path) -> Format:
    """The first format of FORMATS that `blob` (read from a `container` file) satisfies."""
    if isinstance(blob, dict) and str(blob.get("format", "")).startswith("byol-bench."):
        raise ForeignCheckpointError(
            f"{path} is already a byol-bench file ({blob['format']}): pass it to --ckpt as it is"
        )
    for fmt in FORMATS:
        if fmt.container == container and not fmt.problems(blob):
            return fmt
    raise ForeignCheckpointError(
        f"{path} matches none of the formats the importers read: {formats_sentence()}"
    )


def check_format(blob, container: str, fmt: Format, path) -> None:
    """Refuse `blob` as `fmt` (given with --format) with what it lacks."""
    if fmt.container != container:
        kinds = {"pickle": "a raw pickle", "torch": "a torch file"}
        raise ForeignCheckpointError(
            f"{path} is {kinds[container]}, but --format {fmt.name} is {kinds[fmt.container]}: "
            "pass --format auto"
        )
    problems = fmt.problems(blob)
    if problems:
        raise ForeignCheckpointError(
            f"{path} is not a {fmt.name} file: it lacks {', '.join(problems)} ({fmt.looks_like})"
        )
