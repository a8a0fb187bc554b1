"""The linear probe's DINO ViT variant: the probe reads DINO's ViT feature, not the pooled one.

DINO eval_linear.py (Caron et al. 2021; facebookresearch/dino): for a ViT the linear classifier
reads the [CLS] tokens of the last `n_last_blocks` blocks, each through the final LayerNorm
(`get_intermediate_layers`), concatenated: n_last_blocks 4 and avgpool_patchtokens False for
ViT-S/16 (its README's 77.0% linear), i.e. a [B, 4 x 384] feature. `python -m evaluate.linear
--dino-vit` trains the probe of evaluate/linear.py (its LR sweep, selection and test) on that
feature, recorded under its own protocol names (DINO_VIT_PROTOCOL, DINO_VIT_FAST_PROTOCOL with
--fast), never as byol-paper/2 or cached-centercrop/2. The rest of DINO's linear recipe (100
epochs, SGD lr 0.001 x batch/256 with a cosine schedule, weight decay 0) is not copied: the
variant changes the feature only. A ResNet export has no [CLS] token: refused with a sentence.
"""

from __future__ import annotations

import torch
from torch import nn

from evaluate.harness import EvalInputs, InputError
from pretrain.backbones import is_vit

DINO_VIT_PROTOCOL = "byol-paper-dino-vit-last4/1"  # byol-paper/2 on DINO's ViT feature
DINO_VIT_FAST_PROTOCOL = "cached-centercrop-dino-vit-last4/1"  # cached-centercrop/2 on it
N_LAST_BLOCKS = 4  # DINO eval_linear.py --n_last_blocks for ViT-S (README: "4 for deit_small")
FEATURE_KIND = f"dino-vit-last{N_LAST_BLOCKS}-cls"  # the feature cache's key for this feature


class DinoLinearFeatures(nn.Module):
    """A frozen ViTEncoder whose forward is DINO eval_linear.py's feature [B, n x D]."""

    def __init__(self, encoder: nn.Module, n_last_blocks: int = N_LAST_BLOCKS) -> None:
        super().__init__()
        self.encoder, self.n_last_blocks = encoder, n_last_blocks

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder.dino_linear_features(images, self.n_last_blocks, avgpool=False)


def use_dino_vit_features(inputs: EvalInputs) -> None:
    """Point `inputs` at the DINO ViT feature, in place (encoder, feature_dim, cache key); a
    checkpoint that is not a ViT with a [CLS] token is refused."""
    arch = inputs.metadata["arch"]
    if not is_vit(arch):
        raise InputError(
            f"--dino-vit reads the [CLS] tokens of a ViT's last {N_LAST_BLOCKS} blocks (DINO "
            f"eval_linear.py), but {arch} is a ResNet: drop --dino-vit for its linear probe "
            "(byol-paper/2, or cached-centercrop/2 with --fast)"
        )
    if not inputs.encoder.has_cls_token:
        raise InputError(
            f"--dino-vit reads [CLS] tokens, and this {arch} has none (cls_token false, e.g. "
            "SelfPatch's ViT): drop --dino-vit to probe its pooled feature (mean of patch tokens)"
        )
    inputs.encoder = DinoLinearFeatures(inputs.encoder)
    inputs.metadata["feature_dim"] = N_LAST_BLOCKS * inputs.encoder.encoder.embed_dim
    inputs.feature_kind = FEATURE_KIND
