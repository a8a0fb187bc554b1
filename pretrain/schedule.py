"""THE learning-rate schedules of every training loop, one signature: (step, total_steps, peak_lr,
*, schedule-specific keywords) -> lr at `step` (0-based).

    warmup_cosine  BYOL pretraining, the linear probe and fine-tuning (BYOL v3, App. B and C)
    dino_cosine    DINO/SelfPatch pretraining: lr, weight decay (DINO utils.cosine_scheduler)
    step_decay     detectron2's WarmupMultiStepLR (detection) and mmseg's step policy
    poly           mmseg's PolyLR (segmentation)

BYOL v3, App. B: lr = base_lr x BatchSize / 256 (base 0.2 for 1000 epochs), linear warm-up over the
first 10 epochs, then cosine decay to zero without restarts. The scaled lr is derived here and
logged; it is never written back into the config.
"""

import math


def scaled_lr(base_lr: float, global_batch_size: int) -> float:
    """Linear scaling rule of BYOL v3, App. B: base_lr x BatchSize / 256."""
    return base_lr * global_batch_size / 256


def warmup_cosine(
    step: int, total_steps: int, peak_lr: float, *, warmup_steps: int = 0, final: float = 0.0
) -> float:
    """Linear warm-up from 0 to ``peak_lr`` over ``warmup_steps``, then cosine decay to ``final``
    (0 in BYOL).

    As in the authors' code (byol/utils/schedules.py): step / warmup x peak during warm-up, then
    final + (peak - final) x (1 + cos(pi (step - warmup) / (total - warmup))) / 2.
    """
    if step < warmup_steps:
        return peak_lr * step / warmup_steps  # the authors' code: 0 at step 0
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    return final + (peak_lr - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def dino_cosine(
    step: int, total_steps: int, peak_lr: float, *, warmup_steps: int = 0, final: float = 0.0
) -> float:
    """DINO's cosine_scheduler (facebookresearch/dino utils.py), used for the lr (final = --min_lr
    1e-6, 10 warm-up epochs) and the weight decay (0.04 -> 0.4, no warm-up): during warm-up
    np.linspace(0, peak, warmup_steps), i.e. peak x step / (warmup_steps - 1), which reaches the
    peak at the warm-up's last step; then final + (peak - final)(1 + cos(pi i / n)) / 2 with
    i = step - warmup_steps and n = total_steps - warmup_steps."""
    if step < warmup_steps:
        return peak_lr * step / max(warmup_steps - 1, 1)
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    return final + (peak_lr - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def step_decay(
    step: int,
    total_steps: int,
    peak_lr: float,
    *,
    milestones: tuple[int, ...],
    gamma: float = 0.1,
    warmup_steps: int = 0,
    warmup_factor: float = 1.0,
) -> float:
    """x`gamma` at each of `milestones` (steps); during the first `warmup_steps` the factor rises
    linearly from `warmup_factor` to 1 (detectron2's WarmupMultiStepLR, linear warmup; mmseg's
    step policy without warmup). `total_steps` is not used: the milestones say it all."""
    factor = gamma ** sum(milestone <= step for milestone in milestones)
    if step < warmup_steps:
        alpha = step / warmup_steps
        factor *= warmup_factor * (1 - alpha) + alpha
    return peak_lr * factor


def poly(
    step: int,
    total_steps: int,
    peak_lr: float,
    *,
    power: float,
    min_lr: float = 0.0,
    warmup_steps: int = 0,
    warmup_ratio: float = 1.0,
) -> float:
    """mmseg's PolyLR: min_lr + (peak - min_lr)(1 - step/total)^power. With `warmup_steps`,
    mmcv's linear warm-up (LrUpdaterHook, warmup="linear") scales that LR by
    1 - (1 - step/warmup_steps)(1 - warmup_ratio) during the first `warmup_steps` steps."""
    fraction = (1 - min(step, total_steps) / total_steps) ** power
    lr = min_lr + (peak_lr - min_lr) * fraction
    if step < warmup_steps:
        lr *= 1 - (1 - step / warmup_steps) * (1 - warmup_ratio)
    return lr
