"""BYOL's projector and predictor: one MLP shape for both.

BYOL v3, Sec. 3.3 and App. A: a linear layer of output size 4096, batch normalisation, ReLU, then a
final linear layer of output size 256. Projector 2048 -> 4096 -> 256 (R50), predictor
256 -> 4096 -> 256 (online branch only).
"""

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
