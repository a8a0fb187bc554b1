"""Four same-stride ViT maps resampled to a pyramid: strides p/4, p/2, p, 2p (p the patch).

The XCiT/BEiT design that SelfPatch uses for detection (alinlab/SelfPatch detection/backbone/
vit_SelfPatch.py) and XCiT for UperNet (facebookresearch/xcit semantic_segmentation/backbone/
xcit.py), patch 16:

    fpn1  ConvTranspose2d 2x2 s2 -> BatchNorm (SyncBatchNorm there) -> GELU -> ConvTranspose2d
    fpn2  ConvTranspose2d 2x2 s2
    fpn3  identity
    fpn4  MaxPool2d 2, stride 2

all at the ViT's width (384 for ViT-S/16). The layer names are the authors' (fpn1..fpn4), so no
parameter here has "norm" in its name: the configs' weight-decay rule sees the same names.
"""

from __future__ import annotations

import torch
from torch import nn

LEVELS = 4  # fpn1..fpn4


def _deconv(width: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(width, width, kernel_size=2, stride=2)


class ViTPyramid(nn.Module):
    """[4 x [B, D, h, w]] -> [[B, D, 4h, 4w], [B, D, 2h, 2w], [B, D, h, w], [B, D, h/2, w/2]]."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.fpn1 = nn.Sequential(_deconv(width), nn.BatchNorm2d(width), nn.GELU(), _deconv(width))
        self.fpn2 = nn.Sequential(_deconv(width))
        self.fpn3 = nn.Identity()
        self.fpn4 = nn.MaxPool2d(kernel_size=2, stride=2)

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        levels = (self.fpn1, self.fpn2, self.fpn3, self.fpn4)
        return [level(x) for level, x in zip(levels, maps, strict=True)]
