"""The target network: an exponential moving average of the online network.

BYOL v3, Sec. 3.2 and App. A: after each optimiser step, xi <- tau xi + (1 - tau) theta, with
tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2, k the current step and K the total steps,
tau_base = 0.996 (0.9995 for batch 512, App. G). tau rises from tau_base at k = 0 to 1 at k = K.
Buffers (BN running statistics) are copied from the online network. The authors' target keeps its
own BN statistics (deepmind-research/byol, byol_experiment.py: the target's forward pass updates
its own network state): see DEVIATION(target-bn) in `update_target`. The running statistics are
used only by eval-mode forwards; both networks normalise training batches with batch statistics.
"""

import copy
import math

import torch
from torch import nn


def tau_at(step: int, total_steps: int, tau_base: float) -> float:
    """Target decay rate at ``step`` of ``total_steps`` (BYOL v3, Sec. 3.2, cosine schedule)."""
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return 1.0 - (1.0 - tau_base) * (math.cos(math.pi * progress) + 1.0) / 2.0


@torch.no_grad()
def update_target(online: nn.Module, target: nn.Module, tau: float) -> None:
    """xi <- tau xi + (1 - tau) theta for every parameter; buffers are copied.

    One multi-tensor op over all parameters (``torch._foreach_lerp_``) instead of a Python loop:
    lerp(xi, theta, 1 - tau) = xi + (1 - tau)(theta - xi) = tau xi + (1 - tau) theta.
    """
    target_params = list(target.parameters())
    online_params = list(online.parameters())
    if len(target_params) != len(online_params):
        raise ValueError("online and target networks differ in structure")
    torch._foreach_lerp_(target_params, online_params, 1.0 - tau)
    # DEVIATION(target-bn): the target's BN running statistics are the online network's (copied),
    # where the authors' target accumulates its own from its forward passes; the training step
    # (batch statistics) is the same, only eval-mode use of the target's statistics differs.
    buffers = list(target.buffers())
    if buffers:  # ViTs and DINO's heads have none
        torch._foreach_copy_(buffers, list(online.buffers()))


def frozen_copy(online: nn.Module) -> nn.Module:
    """The target/teacher at step 0: a copy of the online network that gets no gradient, with
    stochastic depth switched off (DINO main_dino.py builds its teacher without drop-path; a
    module with `drop_prob` is timm's DropPath). A ResNet copy is a plain deep copy."""
    target = copy.deepcopy(online)
    for parameter in target.parameters():
        parameter.requires_grad_(False)
    for module in target.modules():
        if hasattr(module, "drop_prob"):
            module.drop_prob = 0.0
    return target
