"""The optimisers of pretraining and what a step does to them besides `step()`.

- LARS (pretrain/lars.py) for BYOL on ResNets (BYOL v3, App. B).
- AdamW for ViTs (DINO main_dino.py `get_params_groups` + torch.optim.AdamW with its default
  betas (0.9, 0.999) and eps 1e-8): two groups, weights decayed, biases and every 1-D tensor
  (norms) not; [CLS], position embeddings and SelfPatch's query token (ndim 3) are decayed, as in
  the authors' code. The lr of every group and the weight decay of the first group are set before
  each step from the run's schedule (DINO train_one_epoch).
- `clip_per_tensor`: DINO's utils.clip_gradients, which clips each parameter's gradient norm on
  its own (not the global norm).
- `drop_last_layer_gradients`: DINO's cancel_gradients_last_layer, which sets the heads' last layer
  gradients to None during the first `freeze_last_layer_epochs` (AdamW then skips those tensors:
  no update and no weight decay).
"""

from collections.abc import Iterable

import torch
from torch import nn

from pretrain.lars import LARS, is_excluded, param_groups


def build_optimizer(
    optimizer: str,
    named_parameters: Iterable[tuple[str, nn.Parameter]],
    *,
    weight_decay: float,
    momentum: float = 0.9,
    lars_eta: float = 1e-3,
) -> torch.optim.Optimizer:
    """LARS with BYOL's exclusions, or AdamW with DINO's two groups; lr 0 until the first step."""
    if optimizer == "lars":
        groups = param_groups(named_parameters, weight_decay)
        return LARS(groups, lr=0.0, momentum=momentum, eta=lars_eta)
    return torch.optim.AdamW(adamw_param_groups(named_parameters, weight_decay), lr=0.0)


def adamw_param_groups(
    named_parameters: Iterable[tuple[str, nn.Parameter]], weight_decay: float
) -> list[dict]:
    """DINO's get_params_groups: [decayed weights, not decayed (biases, 1-D tensors)]."""
    decayed, not_decayed = [], []
    for name, parameter in named_parameters:
        if parameter.requires_grad:
            (not_decayed if is_excluded(name, parameter) else decayed).append(parameter)
    return [
        {"params": decayed, "weight_decay": weight_decay},
        {"params": not_decayed, "weight_decay": 0.0},
    ]


def set_step_hyperparameters(
    optimizer: torch.optim.Optimizer, lr: float, weight_decay: float
) -> None:
    """Every group's lr; the decayed (first) group's weight decay (DINO train_one_epoch)."""
    for index, group in enumerate(optimizer.param_groups):
        group["lr"] = lr
        if index == 0:
            group["weight_decay"] = weight_decay


@torch.no_grad()
def clip_per_tensor(parameters: Iterable[nn.Parameter], max_norm: float) -> None:
    """Scale each gradient whose L2 norm exceeds `max_norm` by max_norm / (norm + 1e-6) (DINO
    utils.clip_gradients). One norm per tensor, computed with one multi-tensor op."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    norms = torch._foreach_norm(grads)
    factors = [torch.clamp(max_norm / (norm + 1e-6), max=1.0) for norm in norms]
    torch._foreach_mul_(grads, factors)


def drop_last_layer_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """Set the heads' last-layer gradients to None (DINO cancel_gradients_last_layer)."""
    for parameter in parameters:
        parameter.grad = None
