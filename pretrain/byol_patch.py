"""byol-patch (OURS, not a published method, never "SelfPatch"): BYOL plus a per-patch term, ViTs.

Image term: BYOL v3 exactly as byol.py (heads.mlp projector and predictor on the encoder's pooled
feature, loss.symmetric_loss: both directions summed, target with stop-gradient).

Patch term, our design (SelfPatch's neighbourhood on BYOL's objective; Yun et al. 2022 have no
BYOL variant):
- online: every patch token of a view -> patch projector -> patch predictor: q_i [P];
- target, the SAME view: every patch token -> target patch projector: z_j [P]; patch i's
  neighbours are the top-k (patch_topk, 4) of the 8 cells of its 3x3 window ranked by the
  target's cosine similarity on its raw backbone patch tokens (patch_neighbours.py, as SelfPatch's
  teacher; borders wrap around unless ``wrap`` is False, missing neighbours left out), and its
  target is their MEAN z-bar_i = mean_j z_j: a parameter-free aggregation (SelfPatch learns a
  class-attention aggregation instead; ours keeps BYOL's target a pure EMA projection);
- per view: L_patch(view) = mean over batch and patches of 2 - 2 cos(q_i, sg(z-bar_i))
  (loss.regression_loss, BYOL's normalised MSE);
- loss = BYOL loss + patch_loss_weight * (L_patch(view_1) + L_patch(view_2)), the two views
  summed as BYOL sums its two directions.
The patch projector and predictor are heads.mlp with the image heads' sizes; BN statistics are
over all patches of one view (heads.per_view). The target (encoder, both projectors) is an EMA of
the online network (ema.py); it runs in train mode, as BYOL's.
"""

import torch
from torch import nn

from pretrain.config import ConfigError
from pretrain.dino import make_teacher
from pretrain.heads import mlp, per_view
from pretrain.loss import regression_loss, symmetric_loss
from pretrain.patch_neighbours import (
    WINDOW_SLOTS,
    gather_neighbours,
    neighbour_index,
    top_neighbours,
)


def neighbour_mean_targets(
    patch_tokens: torch.Tensor,
    patch_projections: torch.Tensor,
    grid: tuple[int, int],
    *,
    topk: int,
    wrap: bool,
) -> torch.Tensor:
    """Each patch's target: the mean of the projections of its top-k 3x3 neighbours.

    patch_tokens [B, N, D] (raw target backbone tokens, which rank the neighbours),
    patch_projections [B, N, P] -> [B, N, P]. Missing neighbours (no wrap, borders) are left out
    of the mean.
    """
    index, valid = neighbour_index(*grid, wrap=wrap, device=patch_tokens.device)
    chosen, chosen_valid = top_neighbours(patch_tokens, index, valid, topk)  # [B, N, k]
    neighbours = gather_neighbours(patch_projections, chosen)  # [B, N, k, P]
    weights = chosen_valid.to(neighbours.dtype).unsqueeze(-1)  # [B, N, k, 1]
    return (neighbours * weights).sum(dim=2) / weights.sum(dim=2).clamp_min(1.0)


class BYOLPatch(nn.Module):
    """BYOL's online/target networks plus a patch projector (both) and a patch predictor."""

    def __init__(
        self,
        online_encoder: nn.Module,
        target_encoder: nn.Module,
        *,
        projector_hidden_dim: int = 4096,
        projection_dim: int = 256,
        predictor_hidden_dim: int = 4096,
        patch_loss_weight: float = 0.1,
        topk: int = 4,
        wrap: bool = True,
    ) -> None:
        super().__init__()
        if not 1 <= topk <= WINDOW_SLOTS:
            raise ConfigError(f"patch top-k must be between 1 and 8 (the 3x3 window), not {topk}")
        self.online_encoder = online_encoder
        self.feature_dim = dim = online_encoder.embed_dim
        self.online_projector = mlp(dim, projector_hidden_dim, projection_dim)
        self.predictor = mlp(projection_dim, predictor_hidden_dim, projection_dim)
        self.online_patch_projector = mlp(dim, projector_hidden_dim, projection_dim)
        self.patch_predictor = mlp(projection_dim, predictor_hidden_dim, projection_dim)
        self.target_encoder = make_teacher(online_encoder, target_encoder)
        self.target_projector = make_teacher(
            self.online_projector, mlp(dim, projector_hidden_dim, projection_dim)
        )
        self.target_patch_projector = make_teacher(
            self.online_patch_projector, mlp(dim, projector_hidden_dim, projection_dim)
        )
        self.patch_loss_weight, self.topk, self.wrap = patch_loss_weight, topk, wrap
        self.loss_terms: dict[str, torch.Tensor] = {}  # the last forward's terms, for logging

    def online_modules(self) -> nn.ModuleList:
        """The networks the target mirrors (the predictors have no target copy), in order."""
        return nn.ModuleList(
            [self.online_encoder, self.online_projector, self.online_patch_projector]
        )

    def target_modules(self) -> nn.ModuleList:
        """The EMA copies of :meth:`online_modules`, in the same order."""
        return nn.ModuleList(
            [self.target_encoder, self.target_projector, self.target_patch_projector]
        )

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """None: BYOL's heads have no weight-normed last layer to freeze."""
        return []

    def patch_predictions(self, patches_1: torch.Tensor, patches_2: torch.Tensor):
        """Online patch tokens [B, N, D] of both views -> predictions [B, N, P] per view."""
        projections = per_view(
            self.online_patch_projector, patches_1.flatten(0, 1), patches_2.flatten(0, 1)
        )
        predictions = per_view(self.patch_predictor, *projections)
        return [p.view(*patches_1.shape[:2], -1) for p in predictions]

    @torch.no_grad()
    def patch_targets(self, patches_1: torch.Tensor, patches_2: torch.Tensor, grid):
        """Target patch tokens [B, N, D] of both views -> neighbour-mean targets [B, N, P]."""
        projections = per_view(
            self.target_patch_projector, patches_1.flatten(0, 1), patches_2.flatten(0, 1)
        )
        return [
            neighbour_mean_targets(
                patches,
                projection.view(*patches.shape[:2], -1),
                grid,
                topk=self.topk,
                wrap=self.wrap,
            )
            for patches, projection in zip((patches_1, patches_2), projections)
        ]

    def forward(
        self, view_1: torch.Tensor, view_2: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (BYOL loss + patch_loss_weight * patch loss, detached online pooled feature
        of view_1). Both views must have the same size (one patch grid)."""
        pooled_1, patches_1 = self.online_encoder.forward_tokens(view_1)  # [B, D], [B, N, D]
        pooled_2, patches_2 = self.online_encoder.forward_tokens(view_2)
        projections = per_view(self.online_projector, pooled_1, pooled_2)
        prediction_1, prediction_2 = per_view(self.predictor, *projections)  # [B, P] each
        patch_prediction_1, patch_prediction_2 = self.patch_predictions(patches_1, patches_2)
        with torch.no_grad():
            target_pooled_1, target_patches_1 = self.target_encoder.forward_tokens(view_1)
            target_pooled_2, target_patches_2 = self.target_encoder.forward_tokens(view_2)
            target_1, target_2 = per_view(self.target_projector, target_pooled_1, target_pooled_2)
            grid = self.target_encoder.grid(*view_1.shape[-2:])
            patch_target_1, patch_target_2 = self.patch_targets(
                target_patches_1, target_patches_2, grid
            )
        image_loss = symmetric_loss(prediction_1, prediction_2, target_1, target_2)
        patch_term = regression_loss(
            patch_prediction_1.flatten(0, 1), patch_target_1.flatten(0, 1)
        ) + regression_loss(patch_prediction_2.flatten(0, 1), patch_target_2.flatten(0, 1))
        self.loss_terms = {"image": image_loss.detach(), "patch": patch_term.detach()}
        return image_loss + self.patch_loss_weight * patch_term, pooled_1.detach()
