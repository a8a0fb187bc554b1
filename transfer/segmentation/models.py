"""Segmenters on our ResNet backbones: the paper's dilated FCN (VOC) and a semantic FPN (ADE20K).

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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

HEADS = ("fcn", "semfpn")


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


def conv_bn_relu(in_channels: int, out_channels: int, dilation: int = 1) -> nn.Sequential:
    """3x3 conv (no bias) -> BN -> ReLU, padding keeping the size."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False),
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
    """ResNet + FPN (256) + semantic-FPN head (128 channels at stride 4) + 1x1 classifier."""

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        fpn_channels: int = 256,
        head_channels: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        widths = [block[-1].conv1.in_channels for block in self._layers()]  # C2..C5 channels
        self.lateral = nn.ModuleList(nn.Conv2d(w, fpn_channels, 1) for w in widths)
        self.smooth = nn.ModuleList(
            nn.Conv2d(fpn_channels, fpn_channels, 3, padding=1) for _ in widths
        )
        self.scale_heads = nn.ModuleList()
        for level in range(len(widths)):  # level i has stride 4 * 2**i: i upsampling stages
            stages = [
                conv_bn_relu(fpn_channels if s == 0 else head_channels, head_channels)
                for s in range(max(level, 1))
            ]
            self.scale_heads.append(nn.Sequential(*stages))
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(head_channels, num_classes, 1)

    def _layers(self) -> list[nn.Module]:
        b = self.backbone
        return [b.layer1, b.layer2, b.layer3, b.layer4]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        stages = resnet_stages(self.backbone, images)  # strides 4, 8, 16, 32
        laterals = [conv(x) for conv, x in zip(self.lateral, stages)]
        for i in range(len(laterals) - 1, 0, -1):  # top-down pathway
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest"
            )
        pyramid = [conv(x) for conv, x in zip(self.smooth, laterals)]  # [B, 256, H/4*2^i, ...]
        fused = 0
        for level, (head, x) in enumerate(zip(self.scale_heads, pyramid)):
            for stage in head:
                x = stage(x)
                if level > 0:
                    x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            fused = fused + F.interpolate(
                x, size=pyramid[0].shape[-2:], mode="bilinear", align_corners=False
            )
        logits = self.classifier(self.dropout(fused))  # [B, K, H/4, W/4]
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


def build_segmenter(head: str, backbone: nn.Module, num_classes: int) -> nn.Module:
    """The segmenter `head` ("fcn" or "semfpn") on `backbone`, all parameters trainable."""
    if head not in HEADS:
        raise ValueError(f"unknown segmentation head {head!r}; use one of {HEADS}")
    for parameter in backbone.parameters():
        parameter.requires_grad_(True)  # load_encoder returns it frozen; fine-tuning unfreezes
    model = FCN(backbone, num_classes) if head == "fcn" else SemanticFPN(backbone, num_classes)
    return model.train()


def backbone_keys_loaded(model: nn.Module, backbone_state: dict[str, torch.Tensor]) -> int:
    """How many of `backbone_state`'s tensors sit unchanged under `backbone.` in `model`."""
    state = model.state_dict()
    return sum(
        1
        for key, value in backbone_state.items()
        if f"backbone.{key}" in state and torch.equal(state[f"backbone.{key}"].cpu(), value.cpu())
    )
