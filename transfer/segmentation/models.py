"""Segmenters on our ResNets: the paper's dilated FCN (VOC) and a semantic FPN (ADE20K); the same
semantic FPN takes a ViT's block maps (build_segmenter hands ViTs to vit_models.py).

Both fine-tune the whole network: the backbone is the pretrained encoder, unfrozen, with its BN in
train mode (MoCo's protocol, which BYOL v3 App. D.4 follows, uses SyncBN; on one device this is
plain BN). Its weights come from `evaluate.features.load_encoder` (strict: every key mapped and
checked) and live under `backbone.` with their torchvision names, so
`segmenter.state_dict()["backbone.<key>"]` is the checkpoint's `<key>` before training.

- `FCN` (BYOL v3, App. D.4, after MoCo, He et al. 2020, App. A.3): conv5 (layer4) with dilation 2
  and stride 1 (output stride 16), then two 3x3 convs of 256 channels with dilation 6, each with
  BN and ReLU, and a 1x1 classifier; logits upsampled bilinearly to the input size.
- `SemanticFPN` (Kirillov et al. 2019, "Panoptic Feature Pyramid Networks", as in mmseg's
  configs/_base_/models/fpn_r50.py): FPN over C2..C5 (256 channels), each level brought to stride 4
  by 3x3 conv(128)-BN-ReLU + 2x upsampling stages, summed, dropout 0.1, 1x1 classifier, upsampled.
  One head for every backbone: it takes any list of maps with their channels and nominal strides.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.vit import ViTEncoder

if TYPE_CHECKING:
    from transfer.segmentation.protocols import SegmentationProtocol

HEADS = ("fcn", "semfpn", "upernet")


def resnet_stages(backbone: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """[C2, C3, C4, C5] feature maps of a pretrain.backbones.ResNet (strides 4, 8, 16, 32|16)."""
    x = backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(images))))  # [B, 64k, H/4, W/4]
    stages = []
    for layer in (backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4):
        x = layer(x)
        stages.append(x)
    return stages


def dilate_last_stage(backbone: nn.Module, dilation: int = 2) -> None:
    """conv5 with stride 1 and dilation `dilation` on every 3x3 conv (in place).

    As DeepLab and mmseg's ResNet(strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2)): the first block's
    strided conv and its shortcut get stride 1, and every 3x3 conv of the stage is dilated, so the
    same weights compute the output-stride-16 features the paper's FCN uses.
    """
    for block in backbone.layer4:
        for conv in (m for m in block.modules() if isinstance(m, nn.Conv2d)):
            conv.stride = (1, 1)
            if conv.kernel_size == (3, 3):
                conv.dilation, conv.padding = (dilation, dilation), (dilation, dilation)


def conv_bn_relu(
    in_channels: int, out_channels: int, dilation: int = 1, kernel_size: int = 3
) -> nn.Sequential:
    """Conv (3x3 unless told, no bias) -> BN -> ReLU, padding keeping the size (mmcv
    ConvModule with a norm: bias "auto" is off)."""
    padding = dilation * (kernel_size // 2)
    return nn.Sequential(
        nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class FCN(nn.Module):
    """Dilated-conv5 ResNet + two 3x3 (256, dilation 6) convs + 1x1 classifier (BYOL App. D.4)."""

    def __init__(self, backbone: nn.Module, num_classes: int, channels: int = 256) -> None:
        super().__init__()
        dilate_last_stage(backbone, dilation=2)
        self.backbone = backbone
        self.head = nn.Sequential(
            conv_bn_relu(backbone.feature_dim, channels, dilation=6),
            conv_bn_relu(channels, channels, dilation=6),
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        c5 = resnet_stages(self.backbone, images)[-1]  # [B, feature_dim, H/16, W/16]
        logits = self.classifier(self.head(c5))  # [B, K, H/16, W/16]
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


class SemanticFPN(nn.Module):
    """Backbone feature maps -> FPN (256) -> semantic-FPN head (128) -> 1x1 classifier, upsampled.

    `features(backbone, images)` returns the maps the FPN takes, `in_channels` their channels,
    `strides` their nominal strides (mmseg FPNHead's feature_strides): level i gets
    max(1, log2(strides[i] / strides[0])) conv(128)-BN-ReLU stages, each followed by a 2x
    upsampling when strides[i] != strides[0], and every level is resized (bilinear) to the first
    level's size before the sum. For a ResNet the maps are C2..C5 at strides 4..32, so the sum is
    at stride 4; for a ViT all four maps are at stride 16 while the nominal strides stay
    [4, 8, 16, 32] (SelfPatch's config): levels 1..3 are upsampled 2x, 4x, 8x and resized back
    to stride 16, where the logits then are, as mmseg computes that config.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        in_channels: list[int],
        features: Callable[[nn.Module, torch.Tensor], list[torch.Tensor]] = resnet_stages,
        strides: tuple[int, ...] = (4, 8, 16, 32),
        fpn_channels: int = 256,
        head_channels: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if len(strides) != len(in_channels) or min(strides) != strides[0]:
            raise ValueError(f"strides {strides} must match {in_channels}, the smallest first")
        self.backbone, self.features = backbone, features
        self.lateral = nn.ModuleList(nn.Conv2d(w, fpn_channels, 1) for w in in_channels)
        self.smooth = nn.ModuleList(
            nn.Conv2d(fpn_channels, fpn_channels, 3, padding=1) for _ in in_channels
        )
        self.upsample = [stride != strides[0] for stride in strides]
        self.scale_heads = nn.ModuleList()
        for stride in strides:
            length = max(1, int(math.log2(stride) - math.log2(strides[0])))
            stages = [
                conv_bn_relu(fpn_channels if s == 0 else head_channels, head_channels)
                for s in range(length)
            ]
            self.scale_heads.append(nn.Sequential(*stages))
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(head_channels, num_classes, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.features(self.backbone, images)
        laterals = [conv(x) for conv, x in zip(self.lateral, maps)]
        for i in range(len(laterals) - 1, 0, -1):  # top-down pathway
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest"
            )
        pyramid = [conv(x) for conv, x in zip(self.smooth, laterals)]  # [B, 256, h_i, w_i]
        fused = 0
        for head, upsample, x in zip(self.scale_heads, self.upsample, pyramid):
            for stage in head:
                x = stage(x)
                if upsample:
                    x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            fused = fused + F.interpolate(
                x, size=pyramid[0].shape[-2:], mode="bilinear", align_corners=False
            )
        logits = self.classifier(self.dropout(fused))  # [B, K, h_0, w_0]
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


def resnet_widths(backbone: nn.Module) -> list[int]:
    """C2..C5 channel counts of a pretrain.backbones.ResNet."""
    layers = (backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4)
    return [layer[-1].conv1.in_channels for layer in layers]


def build_segmenter(
    head: str, backbone: nn.Module, num_classes: int, protocol: SegmentationProtocol | None = None
) -> nn.Module:
    """The segmenter `head` on `backbone`, all parameters trainable: "fcn" or "semfpn" on a
    ResNet; on a ViT (pretrain/vit.py), "semfpn" or "upernet" with `protocol`'s blocks,
    drop_path, crop and auxiliary weight (transfer/segmentation/vit_models.py)."""
    if head not in HEADS:
        raise ValueError(f"unknown segmentation head {head!r}; use one of {HEADS}")
    for parameter in backbone.parameters():
        parameter.requires_grad_(True)  # load_encoder returns it frozen; fine-tuning unfreezes
    if isinstance(backbone, ViTEncoder):
        from transfer.segmentation.vit_models import build_vit_segmenter  # imports this module

        if protocol is None or head == "fcn":
            raise ValueError(f"a ViT segmenter needs a ViT protocol's settings, not {head!r}")
        return build_vit_segmenter(head, backbone, num_classes, protocol).train()
    if head == "upernet":
        raise ValueError("the UperNet head takes ViTs only (transfer/segmentation/vit_models.py)")
    if head == "fcn":
        return FCN(backbone, num_classes).train()
    widths = resnet_widths(backbone)
    return SemanticFPN(backbone, num_classes, in_channels=widths).train()


def backbone_keys_loaded(model: nn.Module, backbone_state: dict[str, torch.Tensor]) -> int:
    """How many of `backbone_state`'s tensors sit unchanged under `backbone.` in `model`."""
    state = model.state_dict()
    return sum(
        1
        for key, value in backbone_state.items()
        if f"backbone.{key}" in state and torch.equal(state[f"backbone.{key}"].cpu(), value.cpu())
    )
