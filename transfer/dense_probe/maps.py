"""The feature maps a frozen dense probe reads: a ResNet's conv5, or a ViT's last-block patch grid.

`conv5_map`: a pretrain.backbones ResNet's last stage (conv5 / layer4, stride 32), read through
transfer/segmentation/models.py:resnet_stages (OUR adaptation: DINOv2's probes are for ViTs).

A ViT's map is its last block's patch tokens laid out on the patch grid (stride = the patch
size), as DINOv2 feeds its linear heads (Oquab et al. 2023, §7; facebookresearch/dinov2):
- segmentation, `vit_patch_map`: the patch tokens after the final norm, no [CLS] token
  (notebooks/semantic_segmentation.ipynb sets the backbone's forward to
  get_intermediate_layers(n=out_indices, reshape=True), whose defaults are norm=True and
  return_class_token=False; the ADE20K linear config's head reads the last of out_indices
  [8, 9, 10, 11], in_index [3]: a third-party copy, the issue-17 facts sheet "depth-nyu", §7);
- depth, `vit_patch_cls_map`: the last block's output BEFORE the final norm, each patch token
  concatenated with the [CLS] token, 2D channels (hub/depthers.py:_make_dinov2_linear_depther,
  "lin. 1": get_intermediate_layers(n=[last], reshape=True, return_class_token=True,
  norm=False), and hub/depth/decode_heads.py's _forward_feature concatenates the [CLS] token,
  expanded, to every patch: BNHead(channels=embed_dim x 2)). A ViT without a [CLS] token
  (SelfPatch's) gives its raw patch tokens alone (`vit_raw_patch_map`).
DINOv2 pads each image to a multiple of the patch size (CenterPadding); here the view must be
one (runner.py:check_view refuses it before anything is written; DEVIATION(vit-probe-padding):
the presets' views, 512 px and 480x640, divide by 16, so only a changed view meets it).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from pretrain.vit import ViTEncoder
from transfer.segmentation.models import resnet_stages

FeatureMap = Callable[[nn.Module, torch.Tensor], torch.Tensor]  # (encoder, images) -> [B, C, h, w]
VIT_TOKENS = ("normed-patches", "patches+cls")  # what a probe protocol reads from a ViT


def conv5_map(encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """conv5 (layer4) of a pretrain.backbones ResNet: [B, C, H/32, W/32]."""
    return resnet_stages(encoder, images)[-1]


def vit_patch_map(encoder: ViTEncoder, images: torch.Tensor) -> torch.Tensor:
    """The last block's patch tokens after the final norm (if the ViT has one), no [CLS]:
    [B, D, H/p, W/p] (DINOv2's linear segmentation input)."""
    height, width = encoder.grid(*images.shape[-2:])
    tokens = encoder.patch_tokens(images)  # [B, h*w, D], row-major over the grid
    return tokens.transpose(1, 2).reshape(len(images), -1, height, width)


def vit_patch_cls_map(encoder: ViTEncoder, images: torch.Tensor) -> torch.Tensor:
    """The last block's output before the final norm, each patch token concatenated with the
    [CLS] token: [B, 2D, H/p, W/p] (DINOv2's linear depth input, "lin. 1")."""
    height, width = encoder.grid(*images.shape[-2:])
    last = len(encoder.blocks) - 1
    tokens = encoder._block_outputs(images, {last})[last]  # [B, 1 + h*w, D], no final norm
    patches = tokens[:, 1:].transpose(1, 2).reshape(len(images), -1, height, width)
    cls = tokens[:, 0, :, None, None].expand_as(patches)  # [B, D, h, w]
    return torch.cat((patches, cls), dim=1)


def vit_raw_patch_map(encoder: ViTEncoder, images: torch.Tensor) -> torch.Tensor:
    """The last block's patch tokens before the final norm: [B, D, H/p, W/p] (the depth input
    of a ViT without a [CLS] token to concatenate)."""
    # DEVIATION(vit-depth-probe-no-cls): DINOv2's depth head concatenates the [CLS] token;
    # SelfPatch's ViT has none, so its head reads the D patch channels alone
    return encoder.block_patch_tokens(images, [-1])[0]


def feature_map_for(encoder: nn.Module, vit_tokens: str) -> FeatureMap:
    """The map a probe reads from `encoder`: conv5_map for a ResNet; for a ViT, by the
    protocol's `vit_tokens`: "normed-patches" (vit_patch_map) or "patches+cls"
    (vit_patch_cls_map; vit_raw_patch_map for a ViT without [CLS])."""
    if vit_tokens not in VIT_TOKENS:
        raise ValueError(f"vit_tokens must be one of {VIT_TOKENS}, not {vit_tokens!r}")
    if not isinstance(encoder, ViTEncoder):
        return conv5_map
    if vit_tokens == "normed-patches":
        return vit_patch_map
    return vit_patch_cls_map if encoder.has_cls_token else vit_raw_patch_map
