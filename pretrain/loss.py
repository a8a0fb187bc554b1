"""BYOL's regression loss.

BYOL v3, Sec. 3.2, eq. (2): for the online prediction q and the target projection z' of the other
view, L = ||q/||q|| - z'/||z'|| ||^2 = 2 - 2 cos(q, z'), with a stop-gradient on the target.
Eq. (3)-(4): the loss is symmetrised by feeding view_2 to the online network and view_1 to the
target, and the two directions are **summed** (L_total = L + L~), not averaged. Averaging halves the
gradient, a known infidelity of public ports (cost one of them ~11 points of linear accuracy).
Within one direction the loss is the mean over the batch, as in the authors' code.
"""

import torch
import torch.nn.functional as F


def regression_loss(prediction: torch.Tensor, target_projection: torch.Tensor) -> torch.Tensor:
    """2 - 2 cos(prediction, sg(target_projection)), mean over the batch (BYOL v3, eq. 2)."""
    prediction = F.normalize(prediction, dim=-1)  # [B, 256]
    target_projection = F.normalize(target_projection.detach(), dim=-1)  # [B, 256]
    return (2 - 2 * (prediction * target_projection).sum(dim=-1)).mean()


def symmetric_loss(
    prediction_1: torch.Tensor,
    prediction_2: torch.Tensor,
    target_projection_1: torch.Tensor,
    target_projection_2: torch.Tensor,
) -> torch.Tensor:
    """BYOL v3, eq. (4): L(q(view_1), z'(view_2)) + L(q(view_2), z'(view_1)), summed."""
    return regression_loss(prediction_1, target_projection_2) + regression_loss(
        prediction_2, target_projection_1
    )
