"""Learning-rate schedule for BYOL pretraining.

BYOL v3, App. B: lr = base_lr x BatchSize / 256 (base 0.2 for 1000 epochs), linear warm-up over the
first 10 epochs, then cosine decay to zero without restarts. The scaled lr is derived here and
logged; it is never written back into the config.
"""

import math


def scaled_lr(base_lr: float, global_batch_size: int) -> float:
    """Linear scaling rule of BYOL v3, App. B: base_lr x BatchSize / 256."""
    return base_lr * global_batch_size / 256


def lr_at(step: int, total_steps: int, warmup_steps: int, peak_lr: float) -> float:
    """Linear warm-up from 0 to ``peak_lr`` over ``warmup_steps``, then cosine decay to 0.

    As in the authors' code (byol/utils/schedules.py): step / warmup x peak during warm-up, then
    peak x (1 + cos(pi (step - warmup) / (total - warmup))) / 2.
    """
    if step < warmup_steps:
        return peak_lr * step / warmup_steps  # the authors' code: 0 at step 0
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    return peak_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
