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
    # Optimisation
    batch_size: int = cited(4096, "global batch over all processes; BYOL v3, App. B")
    epochs: int = cited(1000, "pretraining epochs; BYOL v3, App. B")
    warmup_epochs: float = cited(10, "linear learning-rate warm-up; BYOL v3, App. B")
    base_lr: float = cited(
        0.2, "LARS learning rate at batch 256; BYOL v3, App. B: lr = 0.2 x BatchSize / 256"
    )
    weight_decay: float = cited(1.5e-6, "LARS weight decay; BYOL v3, App. B (1000 epochs)")
    momentum: float = cited(0.9, "BYOL v3, App. B: LARS momentum")
    lars_eta: float = cited(1e-3, "BYOL v3, App. B: LARS trust coefficient")
    tau_base: float = cited(0.996, "BYOL v3, Sec. 3.3: target decay rate at step 0")
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
    precision: str = cited("fp32", "arithmetic: fp32 | bf16 (autocast)")
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
        unknown = [name for name in log_destinations(self.log_to) if name not in LOG_TO]
        if unknown:
            raise ConfigError(f"log_to takes {' and '.join(LOG_TO)}, not {', '.join(unknown)}")


CHOICES = {  # fields that take one of a few words
    "precision": ("fp32", "bf16"),
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


def byol_r50_in1k(epochs: int = 1000) -> PretrainConfig:
    """R50, ImageNet, batch 4096; 1000 epochs: BYOL v3, App. B (lr 0.2, tau 0.996, wd 1.5e-6).

    Shorter runs use the authors' released presets (deepmind-research/byol, not in the paper):
    300 epochs lr 0.3 tau 0.99 wd 1e-6; 100 epochs lr 0.45 tau 0.99 wd 1e-6;
    40 epochs lr 0.45 tau 0.97.
    """
    table = {
        1000: (0.2, 0.996, 1.5e-6),
        300: (0.3, 0.99, 1e-6),
        100: (0.45, 0.99, 1e-6),
        40: (0.45, 0.97, 1e-6),
    }
    if epochs not in table:
        raise ConfigError(f"byol_r50_in1k has presets for epochs {sorted(table)}, not {epochs}")
    base_lr, tau_base, weight_decay = table[epochs]
    return PretrainConfig(
        epochs=epochs, base_lr=base_lr, tau_base=tau_base, weight_decay=weight_decay
    )


def byol_r18_cifar10() -> PretrainConfig:
    """ResNet-18 with a CIFAR stem on CIFAR-10 (not in the paper).

    Settings of the public reproductions listed in docs/protocols.md (1000 epochs, batch 256, 92.6%
    online linear top-1): LARS lr 1.0 at batch 256, weight decay 1e-5, tau_base 0.99, no blur.
    """
    return PretrainConfig(
        dataset="cifar10",
        image_size=32,
        small_image_augment=True,
        backbone="resnet18",
        cifar_stem=True,
        batch_size=256,
        epochs=1000,
        base_lr=1.0,
        weight_decay=1e-5,
        tau_base=0.99,
        num_workers=4,
    )


def byol_r18_fmnist_demo() -> PretrainConfig:
    """The `make demo` run: ResNet-18 on Fashion-MNIST at 16 px, 12 epochs in bf16: ~15 minutes on
    2 CPU cores. Not in the paper.

    Recipe, chosen on the held-out 10% of the training set (benchmarks/demo_recipe.py; README "The
    demo preset"): at 16 px the standard stem leaves layer3 and layer4 at 1x1, so a step costs a
    quarter of 32 px, and their convolutions run as matrix products (pretrain/small_inputs.py,
    ~1.9x faster); 16 px beat 20 px at the same minutes. Base lr 2.0, tau_base 0.99, batch 128 and
    a short warm-up were the best per image in our H100 sweep (README). bf16 autocast on this CPU:
    12 epochs fit where 7 did in fp32 with convolutions (held-out gain over random init +2.35
    linear, +2.20 kNN, against +1.43 / +1.95). The CPU fast path: views finished as batched ops in
    the training process and no loader workers (two workers competing with the two compute
    threads cost a fifth of the step). Keepers at epochs 4 and 8 give the report its
    accuracy-against-epochs curve.
    """
    return PretrainConfig(
        dataset="fmnist",
        image_size=16,
        small_image_augment=True,
        backbone="resnet18",
        cifar_stem=False,
        projector_hidden_dim=1024,
        predictor_hidden_dim=1024,
        batch_size=128,
        epochs=12,
        warmup_epochs=0.5,
        base_lr=2.0,
        weight_decay=1e-5,
        tau_base=0.99,
        precision="bf16",
        augment_on="device",
        num_workers=0,
        ckpt_every_min=2.0,
        keep_every_epochs=4,
    )


def byol_r18_fmnist() -> PretrainConfig:
    """The demo's network at 32 px for 4 epochs (about twice the demo's minutes): in our H100 sweep
    (README "The demo preset") it beat random initialisation by 2.5 points on a logistic-regression
    probe."""
    return replace(
        byol_r18_fmnist_demo(),
        image_size=32,
        epochs=4,
        warmup_epochs=0.4,
        base_lr=1.0,
        keep_every_epochs=0,
    )


def byol_r18_fmnist_20px() -> PretrainConfig:
    """The demo's network at 20 px for 3 epochs: our H100 sweep's best gain over random
    initialisation per image seen (+2.5 points on a logistic-regression probe; README).

    Measured end to end on 2 CPU cores (results.pipeline, 2026-11-23; 75 minutes of pretraining on a
    machine shared with other jobs): linear [cached-centercrop/1] 82.6 vs random init 81.4, kNN 76.2
    vs 76.9. It wins the linear probe only.
    """
    return replace(
        byol_r18_fmnist_demo(), image_size=20, epochs=3, warmup_epochs=0.3, keep_every_epochs=0
    )


def tiny_cpu() -> PretrainConfig:
    """A seconds-long run for tests and smoke checks: same code path, tiny sizes."""
    return PretrainConfig(
        dataset="synthetic",
        image_size=32,
        small_image_augment=True,
        backbone="resnet18",
        cifar_stem=False,
        projector_hidden_dim=64,
        projection_dim=32,
        predictor_hidden_dim=64,
        batch_size=16,
        epochs=2,
        warmup_epochs=1,
        base_lr=0.2,
        weight_decay=1e-6,
        tau_base=0.99,
        num_workers=0,
        ckpt_every_min=10.0,
        keep_every_epochs=0,
        log_every_steps=1,
    )


PRESETS = {
    "byol_r50_in1k": byol_r50_in1k,
    "byol_r50_in1k_300ep": lambda: byol_r50_in1k(300),
    "byol_r50_in1k_100ep": lambda: byol_r50_in1k(100),
    "byol_r18_cifar10": byol_r18_cifar10,
    "byol_r18_fmnist_demo": byol_r18_fmnist_demo,
    "byol_r18_fmnist": byol_r18_fmnist,
    "byol_r18_fmnist_20px": byol_r18_fmnist_20px,
    "tiny_cpu": tiny_cpu,
}


def preset(name: str) -> PretrainConfig:
    """The named preset; an unknown name raises with the list of known ones."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]()


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
    config = preset(args.preset)
    overrides = {
        f.name: getattr(args, f.name)
        for f in fields(PretrainConfig)
        if getattr(args, f.name) is not None
    }
    return replace(config, **overrides)
