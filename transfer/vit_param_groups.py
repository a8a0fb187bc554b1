"""AdamW parameter groups of the mm-family ViT transfer configs: decay multiplier 0 by name.

mmcv's DefaultOptimizerConstructor with `paramwise_cfg=dict(custom_keys={"pos_embed":
dict(decay_mult=0.), "cls_token": dict(decay_mult=0.), "norm": dict(decay_mult=0.)})` (SelfPatch's
Mask R-CNN config, modified from Swin-Transformer-Object-Detection) matches each key as a
substring of the parameter's full name; every other parameter, biases included, keeps the base
weight decay. This differs from DINO's pretraining groups (pretrain/optimizers.py), which exempt
every bias and 1-D tensor.
"""

from __future__ import annotations

from torch import nn

SELFPATCH_NO_DECAY_KEYS = ("pos_embed", "cls_token", "norm")


def vit_param_groups(
    model: nn.Module, weight_decay: float, no_decay_keys: tuple[str, ...] = SELFPATCH_NO_DECAY_KEYS
) -> list[dict]:
    """[decayed, not decayed] groups of `model`'s trainable parameters: a parameter whose name
    contains one of `no_decay_keys` gets weight decay 0 (mmcv custom_keys, decay_mult 0)."""
    decayed, exempt = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (exempt if any(key in name for key in no_decay_keys) else decayed).append(parameter)
    return [
        {"params": decayed, "weight_decay": weight_decay},
        {"params": exempt, "weight_decay": 0.0},
    ]
