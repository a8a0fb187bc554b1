"""PretrainConfig: every setting of a BYOL pretraining run, with the paper's defaults cited.

Defaults are BYOL v3 (Grill et al., 2020, arXiv 2006.07733) for ResNet-50 on ImageNet, 1000 epochs.
Presets are plain functions returning configs; command-line flags override their fields, and each
flag's --help text is its field's cited comment (`cited`). Derived values (scaled learning rate,
total steps) are computed by functions and logged, never written back here.
"""

import argparse
import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, fields, replace

from results.errors import ByolBenchError


class ConfigError(ByolBenchError, ValueError):
    """A config value or preset name that does not exist; the message lists the valid ones."""


def cited(default, source: str) -> typing.Any:
    """A dataclass field: its default and what it is, with its source (the flag's --help text)."""
    return dataclasses.field(default=default, metadata={"help": source})


@dataclass(frozen=True)
class PretrainConfig:
    """BYOL pretraining (BYOL v3, Sec. 3.3 and App. B); defaults: R50, ImageNet, 1000 epochs."""

    # Data
    dataset: str = cited(
        "imagenet", "data set: imagenet | cifar10 | cifar100 | fmnist | folder | synthetic"
    )
    data: str | None = cited(
        None, "data set root on disk (fmnist defaults to Debian's copy; synthetic needs none)"
    )
    image_size: int = cited(
        224, "view size in pixels; BYOL v3, App. B: random crops resized to 224x224"
    )
    small_image_augment: bool = cited(
        False, "28-32 px variant of the augmentations (no blur; see pretrain/augment.py)"
    )
    augment_ops: str = cited(
        "authors",
        "augmentation semantics: authors (deepmind-research/byol: additive brightness, "
        "per-channel contrast, HSV saturation, one clipped crop draw, resize without "
        "antialiasing, zero-padded blur) | torchvision (transforms.v2: ColorJitter, "
        "RandomResizedCrop, antialiased resize, reflect-padded blur), optionally followed by "
        "part overrides, one part at a time: e.g. authors,colour=torchvision (parts: crop, "
        "resize, colour, blur); pretrain/augment.py",
    )
    train_subset_per_class: int | None = cited(
        None, "class-balanced subset of the training set, images per class (demos; default: all)"
    )
    # Networks
    backbone: str = cited(
        "resnet50", "encoder (pretrain/backbones.py); BYOL v3, Sec. 3.3: ResNet-50 v1"
    )
    cifar_stem: bool = cited(
        False, "3x3 stride-1 stem, no max-pool, for 28-32 px data (not in the paper)"
    )
    projector_hidden_dim: int = cited(
        4096, "projector hidden size; BYOL v3, Sec. 3.3: MLP 2048 -> 4096 -> 256"
    )
    projection_dim: int = cited(256, "projection (and prediction) size; BYOL v3, Sec. 3.3")
    predictor_hidden_dim: int = cited(
        4096, "predictor hidden size; BYOL v3, Sec. 3.3: the projector's architecture"
    )
    method: str = cited(
        "byol",
        "what is trained: byol (BYOL v3) | byol-patch (ours: BYOL + a per-patch term, ViTs only; "
        "never 'SelfPatch as published') | dino (Caron et al. 2021) | selfpatch (Yun et al. 2022, "
        "the authors' code)",
    )
    drop_path_rate: float = cited(
        0.0, "ViTs: stochastic depth of the student (online) encoder; DINO main_dino.py: 0.1"
    )
    cls_token: bool = cited(
        True, "ViTs: a [CLS] token, the pooled feature (DINO); SelfPatch's ViT has none"
    )
    final_norm: bool = cited(True, "ViTs: the final LayerNorm (DINO); SelfPatch's ViT has none")
    head_hidden_dim: int = cited(
        2048, "DINO/SelfPatch head: hidden size of the 3-layer MLP; DINO main_dino.py"
    )
    head_bottleneck_dim: int = cited(
        256, "DINO/SelfPatch head: bottleneck before the weight-normed layer; DINO main_dino.py"
    )
    head_out_dim: int = cited(65536, "DINO/SelfPatch image head: output size; DINO --out_dim")
    patch_head_out_dim: int = cited(
        4096, "SelfPatch patch head: output size; SelfPatch --out_dim_selfpatch"
    )
    norm_last_layer: bool = cited(
        True, "DINO head: weight-normed last layer with g frozen at 1; DINO --norm_last_layer"
    )
    # Multi-crop views (DINO, SelfPatch): 2 global crops of image_size, local crops below
    local_crops: int = cited(8, "multi-crop: local crops per image; DINO --local_crops_number")
    local_crop_size: int = cited(96, "multi-crop: local crop size in pixels; DINO main_dino.py")
    global_crop_scale_min: float = cited(
        0.4, "multi-crop: global crops' area scale is (this, 1); DINO 0.4, SelfPatch 0.25"
    )
    local_crop_scale_min: float = cited(
        0.05, "multi-crop: local crops' area scale starts here; DINO and SelfPatch 0.05"
    )
    local_crop_scale_max: float = cited(
        0.4, "multi-crop: local crops' area scale ends here; DINO 0.4, SelfPatch 0.25"
    )
    # DINO / SelfPatch objective
    teacher_temp: float = cited(0.04, "DINO: teacher temperature after warm-up; main_dino.py")
    warmup_teacher_temp: float = cited(
        0.04, "DINO: teacher temperature at epoch 0, linear to --teacher-temp; main_dino.py"
    )
    warmup_teacher_temp_epochs: int = cited(
        0, "DINO: epochs of teacher-temperature warm-up; main_dino.py: 0"
    )
    student_temp: float = cited(0.1, "DINO: student temperature; DINOLoss")
    center_momentum: float = cited(0.9, "DINO: EMA momentum of the teacher's centre; DINOLoss")
    patch_loss_weight: float = cited(
        0.1, "SelfPatch / byol-patch: weight of the patch term; SelfPatch main_selfpatch.py"
    )
    patch_topk: int = cited(
        4,
        "SelfPatch: neighbours kept (of the 3x3 window's 8) by the teacher's cosine "
        "similarity; SelfPatch --k_num",
    )
    patch_wrap: bool = cited(
        True,
        "SelfPatch: the 3x3 neighbourhood wraps around the grid's borders, as the "
        "authors' code does; false: border patches have fewer candidates",
    )
    # Optimisation
    batch_size: int = cited(4096, "global batch over all processes; BYOL v3, App. B")
    epochs: int = cited(1000, "pretraining epochs; BYOL v3, App. B")
    warmup_epochs: float = cited(10, "linear learning-rate warm-up; BYOL v3, App. B")
    optimizer: str = cited(
        "lars",
        "lars (BYOL v3, App. B) | adamw (DINO: decoupled weight decay, no decay on "
        "biases and norms)",
    )
    base_lr: float = cited(
        0.2,
        "peak learning rate at batch 256, lr = base_lr x BatchSize / 256; BYOL v3, App. B: "
        "LARS 0.2; DINO: AdamW 5e-4",
    )
    final_lr: float = cited(0.0, "learning rate at the end of the cosine; DINO --min_lr 1e-6")
    weight_decay: float = cited(1.5e-6, "weight decay; BYOL v3, App. B (1000 epochs); DINO 0.04")
    weight_decay_end: float | None = cited(
        None,
        "weight decay at the end, cosine from --weight-decay (DINO: 0.04 -> 0.4); "
        "default: constant",
    )
    clip_grad: float = cited(
        0.0,
        "clip each parameter's gradient norm to this (DINO utils.clip_gradients, per "
        "tensor); 0: off; DINO 3.0",
    )
    freeze_last_layer_epochs: int = cited(
        1, "DINO/SelfPatch: epochs during which the heads' last layer gets no update; DINO 1"
    )
    momentum: float = cited(0.9, "BYOL v3, App. B: LARS momentum")
    lars_eta: float = cited(1e-3, "BYOL v3, App. B: LARS trust coefficient")
    tau_base: float = cited(
        0.996, "target (teacher) EMA rate at step 0, cosine to 1; BYOL v3, Sec. 3.3; DINO 0.996"
    )
    # Online linear probe (monitoring only; detached features)
    probe_lr: float = cited(
        0.1,
        "learning rate of the online linear probe (monitoring only; SGD momentum 0.9 on "
        "detached features; the authors train it jointly with LARS: "
        "DEVIATION(online-probe-optimiser), pretrain/online_probe.py)",
    )
    # Run
    seed: int = cited(
        0, "seed of the initial weights, the subset, the sample order and the augmentations"
    )
    precision: str = cited(
        "fp32",
        "arithmetic: fp32 | bf16 (autocast) | fp16 (autocast + loss scaling; DINO) | auto (bf16 "
        "where the device computes it natively, else fp32: pretrain/build.py resolve_precision)",
    )
    channels_last: bool = cited(
        True, "memory layout only: faster convolutions on CPU (oneDNN) and GPU"
    )
    single_position_matmul: bool = cited(
        True,
        "compute the convolutions that have one output position (small images: layer3 and "
        "layer4 of a ResNet at 16 px) as one matrix product: the same result, ~1.9x faster at "
        "16 px on CPU (pretrain/small_inputs.py)",
    )
    compile: str = cited(
        "auto", "auto | on | off: torch.compile the BYOL forward (auto: on for CUDA)"
    )
    augment_on: str = cited(
        "auto",
        "auto | loader | device: where the photometric ops run (pretrain/views.py); device = "
        "batched in the training process, on its GPU or CPU (auto: device on CUDA, else loader)",
    )
    num_workers: int = cited(8, "data-loader processes per training process")
    ckpt_every_min: float = cited(10.0, "minutes between checkpoints (also one at every epoch end)")
    keep_every_epochs: int = cited(100, "keep checkpoints/epoch_XXXX.pt every N epochs (0: never)")
    max_steps: int | None = cited(
        None, "stop after this many steps (smoke tests, demos); the schedule is unchanged"
    )
    log_every_steps: int = cited(10, "host sync interval: progress, checks, log.jsonl step lines")
    records: str | None = cited(
        None, "result records directory (default: <run dir>/../records, the contract's)"
    )
    log_to: str = cited(
        "", "also send log.jsonl's lines to: tensorboard, wandb or both, comma-separated"
    )

    def __post_init__(self) -> None:
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}"
                )
        augment_semantics(self.augment_ops)
        if self.method != "byol" and not self.backbone.startswith("vit_"):
            raise ConfigError(
                f"method {self.method} needs a ViT backbone (vit_*), not {self.backbone}"
            )
        if self.method in ("dino", "selfpatch") and self.augment_ops != "authors":
            raise ConfigError(
                f"--augment-ops chooses the semantics of BYOL's views; {self.method}'s multi-crop "
                "views always use DINO's torchvision/PIL ops (pretrain/multicrop.py)"
            )
        if self.method == "selfpatch" and self.cls_token:
            raise ConfigError(
                "method selfpatch needs --cls-token false: the authors' ViT has no [CLS] token "
                "(the aggregation module makes the image token)"
            )
        unknown = [name for name in log_destinations(self.log_to) if name not in LOG_TO]
        if unknown:
            raise ConfigError(f"log_to takes {' and '.join(LOG_TO)}, not {', '.join(unknown)}")


CHOICES = {  # fields that take one of a few words
    "precision": ("fp32", "bf16", "fp16", "auto"),
    "method": ("byol", "byol-patch", "dino", "selfpatch"),
    "optimizer": ("lars", "adamw"),
    "compile": ("auto", "on", "off"),
    "augment_on": ("auto", "loader", "device"),
}
LOG_TO = ("tensorboard", "wandb")  # where log.jsonl's lines also go (pretrain/log_sinks.py)
AUGMENT_SEMANTICS = ("authors", "torchvision")  # whose ops (pretrain/augment.py)


def log_destinations(log_to: str) -> list[str]:
    """The names in a `log_to` value: "tensorboard,wandb" -> ["tensorboard", "wandb"]."""
    return [name.strip() for name in log_to.split(",") if name.strip()]


AUGMENT_PARTS = ("crop", "resize", "colour", "blur")  # what `augment_ops` switches, part by part


@functools.lru_cache(maxsize=64)
def augment_semantics(augment_ops: str) -> types.MappingProxyType:
    """Each augmentation part's semantics, {part: "authors" | "torchvision"}, from an
    `augment_ops` value: "authors", "torchvision", or either followed by PART=SEMANTICS overrides
    that change one part at a time, e.g. "authors,colour=torchvision" (the README's table of what
    each change did). Raises ConfigError naming the valid words."""
    base, *overrides = augment_ops.split(",")
    if base not in AUGMENT_SEMANTICS:
        raise ConfigError(
            f"augment_ops must start with {' or '.join(AUGMENT_SEMANTICS)}; got {augment_ops!r}"
        )
    parts = dict.fromkeys(AUGMENT_PARTS, base)
    for override in overrides:
        part, _, semantics = override.partition("=")
        if part not in AUGMENT_PARTS or semantics not in AUGMENT_SEMANTICS:
            raise ConfigError(
                f"augment_ops: {override!r} is not PART=SEMANTICS with PART one of "
                f"{', '.join(AUGMENT_PARTS)} and SEMANTICS {' or '.join(AUGMENT_SEMANTICS)}"
            )
        parts[part] = semantics
    return types.MappingProxyType(parts)


# Fields that may change between a run and its resumption: they do not change the trajectory.
RUNTIME_FIELDS = frozenset(
    {
        "data",
        "num_workers",
        "ckpt_every_min",
        "keep_every_epochs",
        "max_steps",
        "log_every_steps",
        "log_to",
        "records",
        "compile",  # same computation, fused kernels
        "single_position_matmul",  # same computation, one matrix product
        "augment_on",  # same draws either way (pretrain/views.py)
    }
)


# Fields added after runs were made: a saved config.json without one had its default.
ADDED_FIELDS = (
    "method",
    "drop_path_rate",
    "cls_token",
    "final_norm",
    "head_hidden_dim",
    "head_bottleneck_dim",
    "head_out_dim",
    "patch_head_out_dim",
    "norm_last_layer",
    "local_crops",
    "local_crop_size",
    "global_crop_scale_min",
    "local_crop_scale_min",
    "local_crop_scale_max",
    "teacher_temp",
    "warmup_teacher_temp",
    "warmup_teacher_temp_epochs",
    "student_temp",
    "center_momentum",
    "patch_loss_weight",
    "patch_topk",
    "patch_wrap",
    "optimizer",
    "final_lr",
    "weight_decay_end",
    "clip_grad",
    "freeze_last_layer_epochs",
)


def added_defaults() -> dict:
    """{field: default} of ADDED_FIELDS: a saved config (config.json) without one of them was
    made before it existed, and so ran with its default."""
    return {f.name: f.default for f in fields(PretrainConfig) if f.name in ADDED_FIELDS}


def _field_type(field: dataclasses.Field) -> type:
    """The scalar type of a field (``int | None`` -> int)."""
    hint = typing.get_type_hints(PretrainConfig)[field.name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint


def _parse_bool(text: str) -> bool:
    if text.lower() in {"1", "true", "yes", "on"}:
        return True
    if text.lower() in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--field-name`` flag per PretrainConfig field, its help the field's cited comment."""
    group = parser.add_argument_group(
        "config overrides (default: the --preset's value; the defaults shown are the paper's: "
        "PretrainConfig, preset byol_r50_in1k)"
    )
    for field in fields(PretrainConfig):
        kind = _field_type(field)
        group.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            type=_parse_bool if kind is bool else kind,
            default=None,
            choices=CHOICES.get(field.name),  # a wrong word is a usage error (exit 2)
            metavar=None if field.name in CHOICES else kind.__name__.upper(),
            help=flag_help(field),
        )


def flag_help(field: dataclasses.Field) -> str:
    """The field's cited comment, with its default unless that is None (the comment says what
    None means); escaped for argparse, which %-formats help texts."""
    text = field.metadata["help"]
    if field.default is not None:
        text += f" (default: {field.default})"
    return text.replace("%", "%%")


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    """The preset named by ``args.preset`` with every flag that was given applied on top."""
    from pretrain.presets import preset  # presets.py imports this module

    config = preset(args.preset)
    overrides = {
        f.name: getattr(args, f.name)
        for f in fields(PretrainConfig)
        if getattr(args, f.name) is not None
    }
    return replace(config, **overrides)
