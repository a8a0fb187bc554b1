"""benchmarks/step.py's ViT contenders: DINO, SelfPatch, BYOL and byol-patch on a ViT, and the
backbone bounds they are measured against (not a test).

    python -m benchmarks.step --arch vit_small_patch16            # CPU: 96/48 px crops, batch 8
    python -m benchmarks.step --arch vit_small_patch16 --device cuda   # 224/96 px, batch 128, bf16

- dino, selfpatch: `pretrain.train.train_step` on a Run of the preset (dino_vits16_in1k,
  selfpatch_vits16_in1k) with the benchmark's sizes: 2 global + `local_crops` local crops per image,
  the real heads (65,536 and 4,096 outputs), AdamW, clip, EMA, online probe.
- byol-bench, byol-patch: byol_vits16_in1k / byolpatch_vits16_in1k on two global-size views.
- multicrop-bound: the least a multi-crop step costs: the student's forward + backward over every
  crop (same-size crops batched, as DINO does) and the teacher's no-grad forward of the 2 global
  crops, nothing else. DINO and SelfPatch are reported against it (SelfPatch's teacher also sees
  the local crops: that is part of its cost).
- backbone-bound (benchmarks/step.py): the two-view bound, for BYOL and byol-patch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from pretrain import dist
from pretrain.backbones import build_backbone
from pretrain.config import PretrainConfig
from pretrain.ema import frozen_copy
from pretrain.presets import (
    byol_vits16_in1k,
    byolpatch_vits16_in1k,
    dino_vits16_in1k,
    selfpatch_vits16_in1k,
)
from pretrain.train import build_run, resolve_compile, train_step

VIT_CONTENDERS = (
    "dino",
    "selfpatch",
    "multicrop-bound",
    "byol-bench",
    "byol-patch",
    "backbone-bound",
)
PRESET_OF = {
    "dino": dino_vits16_in1k,
    "selfpatch": selfpatch_vits16_in1k,
    "byol-bench": byol_vits16_in1k,
    "byol-patch": byolpatch_vits16_in1k,
}
BOUND_OF = {  # which bound each contender's cost is measured against
    "dino": "multicrop-bound",
    "selfpatch": "multicrop-bound",
    "byol-bench": "backbone-bound",
    "byol-patch": "backbone-bound",
    "multicrop-bound": "multicrop-bound",
    "backbone-bound": "backbone-bound",
}


def crops_for(config, device: torch.device) -> list[torch.Tensor]:
    """2 global crops of image_size and `local_crops` local crops of local_size (random)."""
    generator = torch.Generator().manual_seed(0)
    sizes = [config.image_size] * 2 + [config.local_size] * config.local_crops
    shapes = [(config.batch_size, 3, size, size) for size in sizes]
    return [torch.randn(shape, generator=generator).to(device) for shape in shapes]


def run_config(config, name: str) -> PretrainConfig:
    """The contender's preset at the benchmark's sizes, precision and compile setting."""
    return dataclasses.replace(
        PRESET_OF[name](),
        dataset="synthetic",
        backbone=config.arch,
        image_size=config.image_size,
        local_crop_size=config.local_size,
        local_crops=config.local_crops,
        batch_size=config.batch_size,
        epochs=100,
        warmup_epochs=1,
        precision=config.precision,
        compile=config.compile,
        num_workers=0,
        train_subset_per_class=max(1, -(-config.batch_size // 10)),
    )


def method_step(name: str):
    """A builder of `name`'s step (benchmarks/step.py BUILDERS' signature)."""

    def build(config, device: torch.device, views) -> Callable[[], None]:
        settings = run_config(config, name)
        run = build_run(settings, None, device, dist.DistInfo())
        run.model.train()
        multicrop = name in ("dino", "selfpatch")
        inputs = (crops_for(config, device),) if multicrop else views
        labels = torch.zeros(config.batch_size, dtype=torch.long, device=device)

        def step() -> None:
            train_step(run, inputs, labels)
            run.step += 1

        return step

    return build


def multicrop_bound_step(config, device: torch.device, views) -> Callable[[], None]:
    student, _ = build_backbone(config.arch)
    teacher = frozen_copy(student)
    student.to(device).train()
    teacher.to(device).train()
    crops = crops_for(config, device)
    settings = dataclasses.replace(PretrainConfig(), compile=config.compile)
    if resolve_compile(settings, device):
        student, teacher = torch.compile(student), torch.compile(teacher)
    global_crops, local_crops = torch.cat(crops[:2]), torch.cat(crops[2:]) if crops[2:] else None

    def step() -> None:
        with torch.autocast(device.type, torch.bfloat16, enabled=config.precision == "bf16"):
            total = student(global_crops).float().sum()
            if local_crops is not None:
                total = total + student(local_crops).float().sum()
            with torch.no_grad():
                teacher(global_crops)
        total.backward()
        for parameter in student.parameters():
            parameter.grad = None

    return step


VIT_BUILDERS = {
    "dino": method_step("dino"),
    "selfpatch": method_step("selfpatch"),
    "byol-bench": method_step("byol-bench"),
    "byol-patch": method_step("byol-patch"),
    "multicrop-bound": multicrop_bound_step,
}
