"""Segmenters on our ViTs (SelfPatch's ADE20K protocols): the ViT as the authors' mmseg backbone.

The backbone is a `SegmentationViT`: our ViTEncoder (pretrain/vit.py; timm/DINO key names)
rebuilt as alinlab/SelfPatch segmentation/backbones/vit_SelfPatch.py `SelfPatch_ViT` computes:
- no [CLS] token in the sequence (SelfPatch_ViT has none; mmseg's VisionTransformer with
  with_cls_token=False drops it before the blocks too) and no final norm (final_norm=False):
  a DINO export's `cls_token` and `norm.*` are left out, every other tensor is loaded as is;
- the position embedding is resized once at load, from the pretraining grid to the training
  crop's (img_size=(512, 512): 14x14 -> 32x32 for ViT-S/16), and at every forward from there to
  the input's grid, both by mmseg's `resize` (F.interpolate, bicubic, `size=`, align_corners
  False). This is not DINO's interpolate_pos_encoding (scale factor (h + 0.1) / sqrt(N)), which
  ViTEncoder uses elsewhere; the segmentation protocols follow the authors;
- drop_path (0.1 in SelfPatch's config), linearly increasing over the blocks (timm = mmseg);
- inputs whose sides are not multiples of the patch are zero-padded at the bottom/right
  (mmseg PatchEmbed padding="corner"), and the head's logits are resized to the unpadded input.
The chosen blocks' raw outputs (`block_patch_tokens`) feed the head: for the semantic FPN, all
at stride 16 (models.SemanticFPN with nominal strides [4, 8, 16, 32]); for UperNet, through
transfer/vit_pyramid.py (XCiT/SelfPatch fpn1..fpn4) into upernet.UperNet. The heads are
initialised as mmseg initialises them (upernet.mmseg_head_init).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.vit import ViTEncoder
from transfer.segmentation.models import SemanticFPN
from transfer.segmentation.protocols import SegmentationProtocol
from transfer.segmentation.upernet import UperNet, mmseg_head_init
from transfer.vit_pyramid import ViTPyramid

LEFT_OUT = ("cls_token", "norm.weight", "norm.bias")  # export tensors SelfPatch_ViT has no use for


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Patch position embeddings [1, h0*w0, D] (square h0 = w0) resized to `grid` (h, w) as mmseg
    VisionTransformer.resize_pos_embed: bicubic F.interpolate to size=(h, w), align_corners
    False, no antialiasing."""
    side, dim = math.isqrt(pos_embed.shape[1]), pos_embed.shape[-1]
    if (side, side) == tuple(grid):
        return pos_embed
    patch_pos = pos_embed.reshape(1, side, side, dim).permute(0, 3, 1, 2)  # [1, D, h0, w0]
    patch_pos = F.interpolate(patch_pos, size=grid, mode="bicubic", align_corners=False)
    return patch_pos.flatten(2).transpose(1, 2)  # [1, h*w, D]


class SegmentationViT(ViTEncoder):
    """SelfPatch_ViT's computation on ViTEncoder weights (see the module docstring)."""

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """The patch grid of a height x width input after padding to the patch (ceil)."""
        return -(-height // self.patch_size), -(-width // self.patch_size)

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        height, width = self.grid(*images.shape[-2:])
        pad_h = height * self.patch_size - images.shape[-2]
        pad_w = width * self.patch_size - images.shape[-1]
        images = F.pad(images, (0, pad_w, 0, pad_h))  # zeros at the bottom/right
        return self.norm_pre(self.patch_drop(self._pos_embed(self.patch_embed(images))))

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """[B, h, w, D] patch embeddings + the crop-grid pos_embed resized to (h, w) (mmseg)."""
        batch, height, width, dim = x.shape
        pos_embed = resize_pos_embed(self.pos_embed, (height, width))
        return self.pos_drop(x.reshape(batch, height * width, dim) + pos_embed)


def segmentation_vit(encoder: ViTEncoder, crop: int, drop_path: float) -> SegmentationViT:
    """A SegmentationViT holding `encoder`'s weights (all but LEFT_OUT; pos_embed's patch entries
    resized to the `crop` grid), with stochastic depth `drop_path`."""
    depth = len(encoder.blocks)
    model = SegmentationViT(
        patch_size=encoder.patch_size,
        embed_dim=encoder.embed_dim,
        depth=depth,
        num_heads=encoder.blocks[0].attn.num_heads,
        img_size=crop - crop % encoder.patch_size,
        cls_token=False,
        final_norm=False,
        drop_path_rate=drop_path,
    )
    state = {k: v for k, v in encoder.state_dict().items() if k not in LEFT_OUT}
    patch_pos = state["pos_embed"][:, encoder.num_prefix_tokens :]  # [1, N, D]
    state["pos_embed"] = resize_pos_embed(patch_pos, model.patch_embed.grid_size)
    model.load_state_dict(state, strict=True)  # every remaining tensor has its place
    return model


def block_features(
    backbone: SegmentationViT, images: torch.Tensor, blocks: Sequence[int]
) -> list[torch.Tensor]:
    """The raw outputs of `blocks` as [B, D, h, w] grids (stride = the patch)."""
    return backbone.block_patch_tokens(images, blocks)


def build_vit_segmenter(
    head: str, encoder: ViTEncoder, num_classes: int, protocol: SegmentationProtocol
) -> nn.Module:
    """The protocol's segmenter ("semfpn" or "upernet") on a SegmentationViT of `encoder`."""
    backbone = segmentation_vit(encoder, protocol.crop, protocol.drop_path)
    features = partial(block_features, blocks=protocol.blocks)
    channels = [backbone.embed_dim] * len(protocol.blocks)
    if head == "semfpn":
        fpn = SemanticFPN(backbone, num_classes, in_channels=channels, features=features)
        xavier = [*fpn.lateral, *fpn.smooth]
        return mmseg_head_init(fpn, classifiers=[fpn.classifier], xavier=xavier)
    if head == "upernet":
        upernet = UperNet(
            backbone,
            num_classes,
            in_channels=channels,
            features=features,
            pyramid=ViTPyramid(backbone.embed_dim),
            aux_weight=protocol.aux_weight,
        )
        classifiers = [upernet.decode.classifier, upernet.auxiliary[-1]]
        return mmseg_head_init(upernet, classifiers=classifiers)
    raise ValueError(f"no ViT segmenter {head!r}; use semfpn or upernet")
