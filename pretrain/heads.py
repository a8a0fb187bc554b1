"""BYOL's projector and predictor: one MLP shape for both.

BYOL v3, Sec. 3.3 and App. A: a linear layer of output size 4096, batch normalisation, ReLU, then a
final linear layer of output size 256. Projector 2048 -> 4096 -> 256 (R50), predictor
256 -> 4096 -> 256 (online branch only).
"""

import torch
from torch import nn


def mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Linear -> BN -> ReLU -> Linear, no BN on the output (BYOL v3, Sec. 3.3 / App. A).

    BN eps 1e-5 and momentum 0.1, i.e. the paper's decay rate 0.9. The output linear has no bias,
    as in the authors' code (`byol/utils/networks.py`, class MLP; not in the paper). Weights use
    PyTorch's default init (the authors' Haiku code: truncated normal, std 1/sqrt(fan_in)).
    """
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),  # [B, in_dim] -> [B, hidden_dim]
        nn.BatchNorm1d(hidden_dim, eps=1e-5, momentum=0.1),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim, bias=False),  # [B, hidden_dim] -> [B, out_dim]
    )


def per_view(head: nn.Sequential, *views: torch.Tensor) -> list[torch.Tensor]:
    """``[head(view) for view in views]``, computed with one matmul per linear layer.

    BYOL passes each view through the heads on its own, so batch-norm statistics are per view
    (authors' code). Linear layers and ReLU act on each row alone, so they run once on the views
    stacked ([V*B, d]: one larger matmul is faster than V small ones, and a weight used once gets
    one gradient instead of V to add up); each BN layer still runs on one view at a time, in view
    order, so its statistics and running-average updates are exactly those of separate calls.
    """
    if len({view.shape[0] for view in views}) != 1:
        raise ValueError("per_view needs views of equal batch size")
    x = torch.cat(views)  # [V*B, d]
    for layer in head:
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            x = torch.cat([layer(view) for view in x.chunk(len(views))])
        else:
            x = layer(x)
    return list(x.chunk(len(views)))
