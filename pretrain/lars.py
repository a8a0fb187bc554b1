"""LARS (You et al., 2017) as BYOL uses it.

BYOL v3, App. B: LARS with momentum 0.9 and trust coefficient eta = 1e-3; biases and batch-norm
parameters are excluded from weight decay AND from the LARS adaptation. Per parameter tensor w with
gradient g, following the authors' code (byol/utils/optimizers.py):

    u = g + wd * w                   (weight decay, if not excluded)
    u = u * eta * ||w|| / ||u||      (trust ratio, if not excluded; 1 if a norm is 0)
    m = momentum * m + u
    w = w - lr * m

All steps are multi-tensor ops over a parameter group (``torch._foreach_*``, and PyTorch's fused
SGD kernel for the momentum and parameter update), with no per-parameter Python arithmetic, no host
synchronisation and no new parameter-sized tensors (u overwrites the gradient in place).
"""

from collections.abc import Iterable

import torch
from torch import nn


def is_excluded(name: str, parameter: torch.Tensor) -> bool:
    """Biases and BN parameters (every 1-D tensor) get no weight decay and no adaptation."""
    return parameter.ndim <= 1 or name.endswith(".bias")


def param_groups(
    named_parameters: Iterable[tuple[str, nn.Parameter]], weight_decay: float
) -> list[dict]:
    """Two LARS groups: weights (decayed, adapted) and biases/BN parameters (neither)."""
    adapted, excluded = [], []
    for name, parameter in named_parameters:
        if parameter.requires_grad:
            (excluded if is_excluded(name, parameter) else adapted).append(parameter)
    return [
        {"params": adapted, "weight_decay": weight_decay, "lars_adaptation": True},
        {"params": excluded, "weight_decay": 0.0, "lars_adaptation": False},
    ]


class LARS(torch.optim.Optimizer):
    """LARS with BYOL's exclusions; use with :func:`param_groups`."""

    def __init__(self, params, lr: float, momentum: float = 0.9, eta: float = 1e-3) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "eta": eta,
            "weight_decay": 0.0,
            "lars_adaptation": True,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D401 - torch.optim signature
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            # The update is built in the gradients' own storage: a new tensor per parameter would
            # cost a fresh allocation (page faults on CPU) every step. After step(), p.grad holds
            # the LARS update u, not the gradient.
            updates = [p.grad for p in params]
            if group["weight_decay"] != 0.0:
                torch._foreach_add_(updates, params, alpha=group["weight_decay"])
            if group["lars_adaptation"]:
                _apply_trust_ratio(params, updates, group["eta"])
            # m = momentum * m + u; w = w - lr * m: PyTorch's fused SGD kernel (weight decay 0,
            # dampening 0) does both in one pass over w, u and m instead of three.
            torch._fused_sgd_(
                params,
                updates,
                self._momentum_buffers(params) if group["momentum"] else [],  # [] = plain SGD
                weight_decay=0.0,
                momentum=group["momentum"],
                lr=group["lr"],
                dampening=0.0,
                nesterov=False,
                maximize=False,
                is_first_step=False,  # buffers start at zero: the first step gives m = u
            )
        return loss

    def _momentum_buffers(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        buffers = []
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buffers.append(state["momentum_buffer"])
        return buffers


def _apply_trust_ratio(params: list[torch.Tensor], updates: list[torch.Tensor], eta: float) -> None:
    """updates *= eta ||w|| / ||u|| per tensor, or 1 where either norm is zero (in place)."""
    param_norms = torch.stack(torch._foreach_norm(params))
    update_norms = torch.stack(torch._foreach_norm(updates))
    ratio = eta * param_norms / update_norms
    ratio = torch.where((param_norms > 0) & (update_norms > 0), ratio, torch.ones_like(ratio))
    torch._foreach_mul_(updates, list(ratio.unbind()))
