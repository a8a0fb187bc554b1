"""BYOL: the online and target networks and the symmetric loss, in one small module.

BYOL v3, Sec. 3.2 / Fig. 2. The online network is an encoder f_theta, a projector g_theta and a
predictor q_theta; the target network is an encoder f_xi and a projector g_xi (no predictor), whose
weights xi are an exponential moving average of theta (see ema.py) and receive no gradient.
For two augmented views v, v' of the same image:

    loss = L(q(g(f(v))), sg(g'(f'(v')))) + L(q(g(f(v'))), sg(g'(f'(v))))   (summed, eq. 4)

Each view goes through the networks on its own, so batch-norm statistics are per view as in the
authors' code (the heads' linear layers run on both views stacked, which changes nothing but speed:
see heads.per_view). The target runs in train mode (batch statistics), as in the authors' code.
"""

import torch
from torch import nn

from pretrain.backbones import build_backbone
from pretrain.ema import frozen_copy
from pretrain.heads import mlp, per_view
from pretrain.loss import symmetric_loss


class BYOL(nn.Module):
    """Online encoder + projector + predictor, target encoder + projector (BYOL v3, Sec. 3.2)."""

    def __init__(
        self,
        backbone: str,
        *,
        cifar_stem: bool = False,
        projector_hidden_dim: int = 4096,
        projection_dim: int = 256,
        predictor_hidden_dim: int = 4096,
        encoder_options: dict | None = None,
    ) -> None:
        """`encoder_options`: build_backbone's ViT keywords (drop-path, [CLS], final norm)."""
        super().__init__()
        self.online_encoder, self.feature_dim = build_backbone(
            backbone, cifar_stem=cifar_stem, **(encoder_options or {})
        )
        self.online_projector = mlp(self.feature_dim, projector_hidden_dim, projection_dim)
        self.predictor = mlp(projection_dim, predictor_hidden_dim, projection_dim)
        self.target_encoder = frozen_copy(self.online_encoder)  # no drop-path in the target
        self.target_projector = frozen_copy(self.online_projector)

    def online_modules(self) -> nn.ModuleList:
        """The networks the optimiser trains, in the order the target mirrors them."""
        return nn.ModuleList([self.online_encoder, self.online_projector])

    def target_modules(self) -> nn.ModuleList:
        """The EMA copies of :meth:`online_modules`, in the same order."""
        return nn.ModuleList([self.target_encoder, self.target_projector])

    def target_parameters(self):
        return self.target_modules().parameters()

    def last_layer_parameters(self) -> list:
        """None: BYOL has no head layer frozen at the start (DINO's freeze_last_layer)."""
        return []

    def forward(
        self, view_1: torch.Tensor, view_2: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (BYOL loss summed over both directions, detached online features of view_1)."""
        representation_1 = self.online_encoder(view_1)  # [B, 2048]
        representation_2 = self.online_encoder(view_2)  # [B, 2048]
        projections = per_view(self.online_projector, representation_1, representation_2)
        prediction_1, prediction_2 = per_view(self.predictor, *projections)  # [B, 256] each
        with torch.no_grad():
            target_representations = self.target_encoder(view_1), self.target_encoder(view_2)
            target_projection_1, target_projection_2 = per_view(
                self.target_projector, *target_representations
            )  # [B, 256] each
        loss = symmetric_loss(prediction_1, prediction_2, target_projection_1, target_projection_2)
        return loss, representation_1.detach()
