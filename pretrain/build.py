"""Build a BYOL pretraining run: data, networks, optimisers and the derived schedule (`Run`).

`build_run(config, run_dir, device, info)` returns the `Run` that pretrain/train.py's narrative
trains: the view-pair loader and its sampler (pretrain/views.py, pretrain/sampling.py), BYOL
(pretrain/byol.py) on its device (DDP and global BN with several ranks), LARS with the BYOL v3
exclusions (pretrain/lars.py), the online probe, and the `Schedule` of derived quantities
(steps, warm-up, scaled peak lr, tau), which is logged and never written back into the config.
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
from pretrain.byol import BYOL
from pretrain.config import PretrainConfig
from pretrain.ema import tau_at
from pretrain.lars import LARS, param_groups
from pretrain.online_probe import build_probe
from pretrain.sampling import SeededBatches
from pretrain.schedule import scaled_lr, warmup_cosine
from pretrain.small_inputs import single_position_convs, use_single_position_convs
from pretrain.state import seed_everything


@dataclass(frozen=True)
class Schedule:
    """Derived quantities of a run (logged, never stored in the config)."""

    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    peak_lr: float
    tau_base: float

    def lr(self, step: int) -> float:
        return warmup_cosine(step, self.total_steps, self.peak_lr, warmup_steps=self.warmup_steps)

    def tau(self, step: int) -> float:
        return tau_at(step, self.total_steps, self.tau_base)


@dataclass
class Run:
    """Everything a training loop touches (small stateful container)."""

    config: PretrainConfig
    run_dir: Path
    device: torch.device
    info: dist.DistInfo
    model: nn.Module  # BYOL, possibly wrapped in DistributedDataParallel
    byol: BYOL  # the unwrapped module
    optimizer: LARS
    probe: nn.Linear
    probe_optimizer: torch.optim.Optimizer
    loader: torch.utils.data.DataLoader
    sampler: SeededBatches
    probe_loader: torch.utils.data.DataLoader | None
    schedule: Schedule
    augment_on: str = "loader"  # resolved: loader | device (pretrain/views.py)
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
    augment_on = resolve_augment_on(config, device)
    loader, sampler, probe_loader, num_classes = build_data(config, info, augment_on)
    seed_everything(config.seed)  # same initial weights on every rank and every restart
    byol = BYOL(
        config.backbone,
        cifar_stem=config.cifar_stem,
        projector_hidden_dim=config.projector_hidden_dim,
        projection_dim=config.projection_dim,
        predictor_hidden_dim=config.predictor_hidden_dim,
    )
    single_position = single_position_layout(byol, config)
    model = distribute(byol, device, info, memory_format(config))
    if resolve_compile(config, device):
        model = torch.compile(model)  # the BYOL forward; backward and optimiser stay eager
    trainable = [
        (name, parameter)
        for name, parameter in byol.named_parameters()
        if not name.startswith(("target_encoder.", "target_projector."))
    ]
    optimizer = LARS(
        param_groups(trainable, config.weight_decay),
        lr=0.0,
        momentum=config.momentum,
        eta=config.lars_eta,
    )
    probe, probe_optimizer = build_probe(byol.feature_dim, num_classes, config.probe_lr)
    probe.to(device)
    schedule = Schedule(
        steps_per_epoch=sampler.steps_per_epoch,
        total_steps=sampler.steps_per_epoch * config.epochs,
        warmup_steps=round(sampler.steps_per_epoch * config.warmup_epochs),
        peak_lr=scaled_lr(config.base_lr, config.batch_size),
        tau_base=config.tau_base,
    )
    return Run(
        config=config,
        run_dir=run_dir,
        device=device,
        info=info,
        model=model,
        byol=byol,
        optimizer=optimizer,
        probe=probe,
        probe_optimizer=probe_optimizer,
        loader=loader,
        sampler=sampler,
        probe_loader=probe_loader,
        schedule=schedule,
        augment_on=augment_on,
        views=byol_views(config.small_image_augment, config.augment_ops),
        stats=data_lib.dataset_stats(config.dataset),
        single_position_convs=tuple(single_position),
    )


def single_position_layout(byol: BYOL, config: PretrainConfig) -> list[str]:
    """Run the convolutions with one output position at the run's image size as one matrix
    product, in both encoders (pretrain/small_inputs.py: exact, and ~1.9x faster at 16 px); returns
    their names (logged in the run's header)."""
    if not config.single_position_matmul:
        return []
    with torch.device("meta"):
        encoder, _ = build_backbone(config.backbone, cifar_stem=config.cifar_stem)
    names = single_position_convs(encoder, config.image_size)
    use_single_position_convs([byol.online_encoder, byol.target_encoder], names)
    return names


def resolve_compile(config: PretrainConfig, device: torch.device) -> bool:
    """`compile` auto means on for CUDA, off elsewhere (compiling costs minutes, pays on GPUs)."""
    return config.compile == "on" or (config.compile == "auto" and device.type == "cuda")


def resolve_augment_on(config: PretrainConfig, device: torch.device) -> str:
    """`augment_on` auto means "device" on CUDA, "loader" elsewhere (pretrain/views.py)."""
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
    mean, std = data_lib.dataset_stats(config.dataset)
    view_1, view_2 = byol_views(config.small_image_augment, config.augment_ops)
    per_rank_batch = config.batch_size // info.world_size
    if len(train_set) < config.batch_size:
        raise ValueError(
            f"the training set has {len(train_set)} images, fewer than one batch of "
            f"{config.batch_size}; lower --batch-size"
        )
    loader, sampler = views_lib.build_pretrain_loader(
        train_set,
        view_1=view_1,
        view_2=view_2,
        out_size=config.image_size,
        batch_size=per_rank_batch,
        seed=config.seed,
        rank=info.rank,
        world_size=info.world_size,
        num_workers=config.num_workers,
        mean=mean,
        std=std,
        augment_on=augment_on,
    )
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


def memory_format(config: PretrainConfig) -> torch.memory_format:
    return torch.channels_last if config.channels_last else torch.contiguous_format


def distribute(
    byol: BYOL, device: torch.device, info: dist.DistInfo, layout: torch.memory_format
) -> nn.Module:
    """Move to device; with several ranks: global BN (SyncBatchNorm on CUDA) and DDP."""
    if info.world_size > 1 and device.type == "cuda":
        byol = nn.SyncBatchNorm.convert_sync_batchnorm(byol)  # BYOL v3, App. B: global BN
    byol.to(device, memory_format=layout)
    if info.world_size == 1:
        return byol
    # DEVIATION(cpu-bn): SyncBatchNorm needs CUDA; on CPU (gloo) each rank normalises its own batch.
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(byol, device_ids=device_ids)
