"""The detection fine-tuning optimizers and loss scaling, as the protocols state them.

sgd    SGD with momentum; norm layers' parameters with weight_decay_norm (detectron2's
       SOLVER.WEIGHT_DECAY_NORM), the rest with weight_decay
adamw  AdamW(betas) with mmcv's custom_keys groups: weight decay 0 for parameter names
       containing one of `no_decay_keys` (transfer/vit_param_groups.py; SelfPatch's config)
amp    fp16 autocast + dynamic loss scaling on CUDA (the authors' apex DistOptimizerHook
       use_fp16), see train.train_step
"""

from __future__ import annotations

import torch
from torch import nn

from transfer.detection.protocols import Protocol
from transfer.vit_param_groups import vit_param_groups


def param_groups(detector: nn.Module, protocol: Protocol) -> list[dict]:
    """Trainable parameters: norm layers with weight_decay_norm, the rest with weight_decay."""
    norm_types = (nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm)
    norm_ids = {
        id(p) for m in detector.modules() if isinstance(m, norm_types) for p in m.parameters()
    }
    trainable = [p for p in detector.parameters() if p.requires_grad]
    return [
        {
            "params": [p for p in trainable if id(p) not in norm_ids],
            "weight_decay": protocol.weight_decay,
        },
        {
            "params": [p for p in trainable if id(p) in norm_ids],
            "weight_decay": protocol.weight_decay_norm,
        },
    ]


def build_optimizer(detector: nn.Module, protocol: Protocol) -> torch.optim.Optimizer:
    """The protocol's optimizer over the detector's trainable parameters: SGD with momentum and
    detectron2's norm groups, or AdamW with mmcv's custom_keys groups (transfer/vit_param_groups.py:
    decay 0 for names containing `no_decay_keys`)."""
    if protocol.optimizer == "adamw":
        groups = vit_param_groups(detector, protocol.weight_decay, protocol.no_decay_keys)
        return torch.optim.AdamW(groups, lr=protocol.base_lr, betas=protocol.betas)
    if protocol.optimizer != "sgd":
        raise ValueError(f"unknown optimizer {protocol.optimizer!r}: sgd or adamw")
    groups = param_groups(detector, protocol)
    return torch.optim.SGD(groups, lr=protocol.base_lr, momentum=protocol.momentum)


def loss_scaler(protocol: Protocol, device: torch.device) -> torch.amp.GradScaler:
    """fp16 loss scaling where the protocol trains in fp16 and the device is CUDA; else disabled.

    DEVIATION(fp32-on-cpu): on CPU the fp16 protocols train in fp32."""
    return torch.amp.GradScaler("cuda", enabled=protocol.amp and device.type == "cuda")
