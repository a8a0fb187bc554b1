"""Build a pretraining run: data, networks, optimisers and the derived schedule (`Run`).

`build_run(config, run_dir, device, info)` returns the `Run` that pretrain/train.py's narrative
trains: the loader and its sampler (BYOL's view pairs, pretrain/views.py, or DINO's multi-crop
views, pretrain/multicrop.py; pretrain/sampling.py), the method's network (pretrain/methods.py:
BYOL, byol-patch, DINO, SelfPatch) on its device (DDP and global BN with several ranks), the
optimiser (pretrain/optimizers.py: LARS with the BYOL v3 exclusions, or AdamW with DINO's groups),
the online probe, and the `Schedule` of derived quantities (steps, warm-up, scaled peak lr, weight
decay, tau, teacher temperature), which is logged and never written back into the config.
"""

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pretrain import data as data_lib
from pretrain import dist
from pretrain import views as views_lib
from pretrain.augment import byol_views
from pretrain.backbones import build_backbone
from pretrain.config import ConfigError, PretrainConfig
from pretrain.ema import tau_at
from pretrain.methods import MULTICROP_METHODS, build_network
from pretrain.online_probe import build_probe
from pretrain.optimizers import build_optimizer
from pretrain.sampling import SeededBatches
from pretrain.schedule import dino_cosine, scaled_lr, warmup_cosine
from pretrain.small_inputs import single_position_convs, use_single_position_convs
from pretrain.state import seed_everything


@dataclass(frozen=True)
class Schedule:
    """Derived quantities of a run (logged, never stored in the config).

    rule "byol": BYOL v3's warm-up + cosine (pretrain/schedule.py warmup_cosine) and a constant
    weight decay unless weight_decay_end is set; rule "dino" (DINO, SelfPatch): DINO's
    cosine_scheduler for the lr and the weight decay, and the teacher temperature's linear
    warm-up per epoch (main_dino.py). tau is the same cosine in both (BYOL v3 Sec. 3.2 = DINO's
    momentum schedule 0.996 -> 1).
    """

    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    peak_lr: float
    tau_base: float
    rule: str = "byol"
    final_lr: float = 0.0
    weight_decay_start: float = 0.0
    weight_decay_end: float | None = None
    teacher_temp_start: float = 0.04
    teacher_temp_end: float = 0.04
    teacher_temp_warmup_epochs: int = 0
    freeze_last_layer_steps: int = 0  # DINO's freeze_last_layer, in steps

    def lr(self, step: int) -> float:
        schedule = dino_cosine if self.rule == "dino" else warmup_cosine
        warmup = self.warmup_steps
        return schedule(
            step, self.total_steps, self.peak_lr, warmup_steps=warmup, final=self.final_lr
        )

    def weight_decay(self, step: int) -> float:
        if self.weight_decay_end is None:
            return self.weight_decay_start
        schedule = dino_cosine if self.rule == "dino" else warmup_cosine
        return schedule(
            step, self.total_steps, self.weight_decay_start, final=self.weight_decay_end
        )

    def tau(self, step: int) -> float:
        return tau_at(step, self.total_steps, self.tau_base)

    def teacher_temp(self, step: int) -> float:
        """DINO: np.linspace(warmup_teacher_temp, teacher_temp, warmup epochs) per epoch, then
        teacher_temp."""
        epoch, warmup = step // self.steps_per_epoch, self.teacher_temp_warmup_epochs
        if epoch >= warmup:
            return self.teacher_temp_end
        start, end = self.teacher_temp_start, self.teacher_temp_end
        return start + (end - start) * epoch / max(warmup - 1, 1)


def build_schedule(config: PretrainConfig, steps_per_epoch: int) -> Schedule:
    """The run's Schedule from its config and the sampler's steps per epoch."""
    return Schedule(
        steps_per_epoch=steps_per_epoch,
        total_steps=steps_per_epoch * config.epochs,
        warmup_steps=round(steps_per_epoch * config.warmup_epochs),
        peak_lr=scaled_lr(config.base_lr, config.batch_size),
        tau_base=config.tau_base,
        rule="dino" if config.method in MULTICROP_METHODS else "byol",
        final_lr=config.final_lr,
        weight_decay_start=config.weight_decay,
        weight_decay_end=config.weight_decay_end,
        teacher_temp_start=config.warmup_teacher_temp,
        teacher_temp_end=config.teacher_temp,
        teacher_temp_warmup_epochs=config.warmup_teacher_temp_epochs,
        freeze_last_layer_steps=steps_per_epoch * config.freeze_last_layer_epochs
        if config.method in MULTICROP_METHODS
        else 0,
    )


@dataclass
class Run:
    """Everything a training loop touches (small stateful container)."""

    config: PretrainConfig
    run_dir: Path
    device: torch.device
    info: dist.DistInfo
    model: nn.Module  # the network, possibly wrapped in DistributedDataParallel
    network: nn.Module  # the unwrapped network (pretrain/methods.py: BYOL, DINO, ...)
    optimizer: torch.optim.Optimizer  # LARS or AdamW (pretrain/optimizers.py)
    probe: nn.Linear
    probe_optimizer: torch.optim.Optimizer
    loader: torch.utils.data.DataLoader
    sampler: SeededBatches
    probe_loader: torch.utils.data.DataLoader | None
    schedule: Schedule
    augment_on: str = "loader"  # resolved: loader | device (pretrain/views.py)
    scaler: torch.amp.GradScaler | None = None  # precision fp16 (DINO's loss scaling)
    views: tuple = ()  # (T, T'), for the device path
    stats: tuple = ()  # (mean, std), for the device path
    single_position_convs: tuple[str, ...] = ()  # computed as matrix products (small_inputs.py)
    step: int = 0
    started: float = dataclasses.field(default_factory=time.monotonic)
    last_save: float = 0.0
    saved_step: int = -1
    probe_heldout: tuple | None = None  # the step lines' fixed held-out batch (step_log.py)
    log_sinks: list = dataclasses.field(default_factory=list)  # --log-to (log_sinks.py), rank 0


def build_run(config: PretrainConfig, run_dir: Path, device: torch.device, info) -> Run:
    """Data, networks, optimisers and the derived schedule."""
    if config.batch_size % info.world_size:
        raise ValueError(
            f"batch size {config.batch_size} is not divisible by {info.world_size} ranks"
        )
    config = resolve_precision(config, device)  # train() resolved it already; direct callers
    augment_on = resolve_augment_on(config, device)
    loader, sampler, probe_loader, num_classes = build_data(config, info, augment_on)
    seed_everything(config.seed)  # same initial weights on every rank and every restart
    network = build_network(config)
    check_view_sizes(network, config)
    single_position = single_position_layout(network, config)
    model = distribute(network, device, info, memory_format(config))
    if resolve_compile(config, device):
        model = torch.compile(model)  # the forward; backward and optimiser stay eager
    trainable = [(name, p) for name, p in network.named_parameters() if p.requires_grad]
    optimizer = build_optimizer(
        config.optimizer,
        trainable,
        weight_decay=config.weight_decay,
        momentum=config.momentum,
        lars_eta=config.lars_eta,
    )
    probe, probe_optimizer = build_probe(network.feature_dim, num_classes, config.probe_lr)
    probe.to(device)
    return Run(
        config=config,
        run_dir=run_dir,
        device=device,
        info=info,
        model=model,
        network=network,
        optimizer=optimizer,
        probe=probe,
        probe_optimizer=probe_optimizer,
        loader=loader,
        sampler=sampler,
        probe_loader=probe_loader,
        schedule=build_schedule(config, sampler.steps_per_epoch),
        scaler=torch.amp.GradScaler(device.type) if config.precision == "fp16" else None,
        augment_on=augment_on,
        views=byol_views(config.small_image_augment, config.augment_ops),
        stats=data_lib.dataset_stats(config.dataset),
        single_position_convs=tuple(single_position),
    )


def check_view_sizes(network: nn.Module, config: PretrainConfig) -> None:
    """A ViT's views must cut into whole patches: refused here, before any step (one sentence)."""
    grid = getattr(network.online_encoder, "grid", None)
    if grid is None:
        return
    grid(config.image_size, config.image_size)
    if config.method in MULTICROP_METHODS and config.local_crops:
        grid(config.local_crop_size, config.local_crop_size)


def single_position_layout(network: nn.Module, config: PretrainConfig) -> list[str]:
    """Run the convolutions with one output position at the run's image size as one matrix
    product, in both encoders (pretrain/small_inputs.py: exact, and ~1.9x faster at 16 px); returns
    their names (logged in the run's header). ResNet BYOL only."""
    if not config.single_position_matmul or config.method != "byol":
        return []
    if config.backbone.startswith("vit_"):
        return []
    with torch.device("meta"):
        encoder, _ = build_backbone(config.backbone, cifar_stem=config.cifar_stem)
    names = single_position_convs(encoder, config.image_size)
    use_single_position_convs([network.online_encoder, network.target_encoder], names)
    return names


def resolve_compile(config: PretrainConfig, device: torch.device) -> bool:
    """`compile` auto means on for CUDA, off elsewhere (compiling costs minutes, pays on GPUs)."""
    return config.compile == "on" or (config.compile == "auto" and device.type == "cuda")


def resolve_precision(config: PretrainConfig, device: torch.device) -> PretrainConfig:
    """`precision` auto means bf16 where the device computes it natively (a CUDA GPU with bf16;
    a CPU on which oneDNN runs bf16, AVX512 or AMX), fp32 elsewhere. On an AVX2-only CPU bf16
    autocast is emulated: the demo preset's step ran 5x slower than in fp32 there (28 against
    140 img/s, README "The demo preset"). Resolved before the run dir is claimed, so the run's
    identity, log and export name the arithmetic that ran, and a run resumes only in it."""
    if config.precision != "auto":
        return config
    return dataclasses.replace(config, precision="bf16" if native_bf16(device) else "fp32")


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively (torch's own checks, CUDA's and oneDNN's)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def resolve_augment_on(config: PretrainConfig, device: torch.device) -> str:
    """`augment_on` auto means "device" on CUDA, "loader" elsewhere (pretrain/views.py); the
    multi-crop views are finished in the loader (pretrain/multicrop.py), as DINO's are."""
    if config.method in MULTICROP_METHODS:
        if config.augment_on == "device":
            raise ConfigError(
                f"--augment-on device is for BYOL's two views; {config.method}'s multi-crop views "
                "are finished in the loader: use --augment-on loader or auto"
            )
        return "loader"
    if config.augment_on != "auto":
        return config.augment_on
    return "device" if device.type == "cuda" else "loader"


def build_data(config: PretrainConfig, info: dist.DistInfo, augment_on: str = "loader"):
    """Training loader of view pairs, the online probe's test loader, and the class count."""
    train_set = data_lib.build_dataset(config.dataset, config.data, "train")
    if config.train_subset_per_class:
        indices = data_lib.subset_indices(
            train_set.targets, num_per_class=config.train_subset_per_class, seed=config.seed
        )
        train_set = data_lib.SubsetDataset(train_set, indices)
    if len(train_set) < config.batch_size:
        raise ValueError(
            f"the training set has {len(train_set)} images, fewer than one batch of "
            f"{config.batch_size}; lower --batch-size"
        )
    mean, std = data_lib.dataset_stats(config.dataset)
    loader, sampler = build_train_loader(config, train_set, info, augment_on)
    probe_loader = None
    if info.is_main:
        test_set = data_lib.build_dataset(config.dataset, config.data, "test")
        probe_loader = views_lib.build_eval_loader(
            test_set,
            out_size=config.image_size,
            batch_size=256,
            num_workers=min(config.num_workers, 4),
            mean=mean,
            std=std,
            resize_ratio=1.0 if config.small_image_augment else 256 / 224,
        )
    return loader, sampler, probe_loader, train_set.num_classes


def build_train_loader(config: PretrainConfig, train_set, info: dist.DistInfo, augment_on: str):
    """The training loader and its sampler: BYOL's view pairs or DINO's multi-crop views, each
    rank loading its share of the global batch."""
    mean, std = data_lib.dataset_stats(config.dataset)
    shared = {
        "batch_size": config.batch_size // info.world_size,
        "seed": config.seed,
        "rank": info.rank,
        "world_size": info.world_size,
        "num_workers": config.num_workers,
        "mean": mean,
        "std": std,
    }
    if config.method in MULTICROP_METHODS:
        from pretrain.multicrop import build_multicrop_loader, multicrop_spec

        return build_multicrop_loader(train_set, multicrop_spec(config), **shared)
    view_1, view_2 = byol_views(config.small_image_augment, config.augment_ops)
    return views_lib.build_pretrain_loader(
        train_set,
        view_1=view_1,
        view_2=view_2,
        out_size=config.image_size,
        augment_on=augment_on,
        **shared,
    )


def memory_format(config: PretrainConfig) -> torch.memory_format:
    return torch.channels_last if config.channels_last else torch.contiguous_format


def distribute(
    network: nn.Module, device: torch.device, info: dist.DistInfo, layout: torch.memory_format
) -> nn.Module:
    """Move to device; with several ranks: global BN (SyncBatchNorm on CUDA) and DDP."""
    if info.world_size > 1 and device.type == "cuda":
        network = nn.SyncBatchNorm.convert_sync_batchnorm(network)  # BYOL v3, App. B: global BN
    network.to(device, memory_format=layout)
    if info.world_size == 1:
        return network
    # DEVIATION(cpu-bn): SyncBatchNorm needs CUDA; on CPU (gloo) each rank normalises its own batch.
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(network, device_ids=device_ids)
