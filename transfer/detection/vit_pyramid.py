"""A plain ViT as a four-level feature pyramid for Mask R-CNN + FPN (SelfPatch, BEiT, XCiT).

SelfPatch's detection backbone (Yun et al. 2022; alinlab/SelfPatch detection/backbone/
vit_SelfPatch.py, `SelfPatch_ViT`, the XCiT/BEiT design) takes the raw outputs of four blocks
(`out_indices`, [3, 5, 7, 11] in configs/selfpatch/mask_rcnn_vit_small_12_p16_1x_coco.py: no
norm applied to them), reshapes the patch tokens to their grid (stride = patch, 16) and resamples
each to one pyramid level (transfer/vit_pyramid.py: fpn1..fpn4, strides p/4, p/2, p, 2p, all
at the ViT's width, 384 for ViT-S/16). The position embedding is interpolated as DINO's
(bicubic, scale (h + 0.1) / sqrt(N); pretrain/vit.py, the same function as the authors'
`interpolate_pos_encoding`), and images are padded to a multiple of 32 (mmdet `Pad`
size_divisor 32; torchvision's GeneralizedRCNNTransform size_divisible 32), hence of 16.
The authors' backbone builds these layers for patch 16 (and another set for patch 8); here the
patch-16 design is used for every patch size (the tiny test ViTs have patch 4: strides 1..8).

The detector's ViT is the export's, rebuilt with the protocol's heads and drop path
(`detection_encoder`): SelfPatch's config sets num_heads 8 on ViT-S/16 weights trained with 6,
which load because no tensor shape depends on the head count.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch

from pretrain.backbones import build_backbone, vit_options
from pretrain.vit import ViTEncoder
from transfer.vit_pyramid import LEVELS, ViTPyramid


class ViTDetectionBody(ViTPyramid):
    """[B, 3, H, W] -> {"0".."3"}: the blocks' patch grids at strides p/4, p/2, p, 2p, width D.

    `encoder` keeps its module names (its state-dict keys are the export's under "encoder.");
    the resampling layers are fpn1..fpn4 as the authors name them (so no parameter outside the
    ViT has "norm" in its name: the config's decay rule sees the same names)."""

    def __init__(self, encoder: ViTEncoder, blocks: Sequence[int]) -> None:
        if len(blocks) != LEVELS:
            raise ValueError(f"the pyramid takes {LEVELS} blocks, not {list(blocks)}")
        super().__init__(encoder.embed_dim)
        self.encoder, self.blocks = encoder, tuple(blocks)
        # The authors' SyncBatchNorm (fpn1's BN): plain BatchNorm2d in one process (which then
        # holds the whole batch, whose statistics SyncBN gathers); models.build_detector
        # converts it to SyncBatchNorm when a process group runs.
        # DEVIATION(det-batch-padding): torchvision pads a batch's images to the largest one;
        # mmdet (1 image per GPU) pads each alone to a multiple of 32, so here the ViT attends
        # over more padding tokens and this BN counts more padded pixels.
        self.out_channels = encoder.embed_dim
        self.strides = tuple(int(encoder.patch_size * f) for f in (0.25, 0.5, 1, 2))

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        grids = self.encoder.block_patch_tokens(images, self.blocks)  # 4 x [B, D, H/p, W/p]
        return OrderedDict((str(i), level) for i, level in enumerate(super().forward(grids)))


def detection_encoder(
    encoder: ViTEncoder, metadata: dict, *, num_heads: int | None, drop_path: float
) -> ViTEncoder:
    """The export's ViT rebuilt for fine-tuning with `num_heads` (None: its own) and stochastic
    depth `drop_path` (timm's linear rule over the blocks, as the authors'), every tensor copied
    with strict=True: the head count changes how qkv is split, never a shape."""
    options = vit_options(metadata)
    rebuilt, _ = build_backbone(
        metadata["arch"], drop_path_rate=drop_path, num_heads=num_heads, **options
    )
    rebuilt.load_state_dict(encoder.state_dict(), strict=True)
    return rebuilt
