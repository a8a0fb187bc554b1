"""UperNet (Xiao et al. 2018, "Unified Perceptual Parsing") as mmseg's UPerHead + FCNHead (aux).

mmseg decode_heads/uper_head.py (UPerHead) and psp_head.py (PPM), with mmcv ConvModules
(conv without bias -> BN -> ReLU):
- PPM on the last (coarsest) map: per pool scale (1, 2, 3, 6), adaptive average pooling ->
  1x1 ConvModule(512) -> bilinear resize back; concatenated with the map -> 3x3 ConvModule(512)
  ("bottleneck"): the top lateral;
- 1x1 ConvModule(512) laterals of the other maps; top-down: each lateral += the one above,
  resized bilinearly; a 3x3 ConvModule(512) on each but the top; all four resized to the finest
  map, concatenated -> 3x3 ConvModule(512) ("fpn_bottleneck") -> Dropout2d(0.1) -> 1x1 classes;
- auxiliary FCNHead (num_convs 1, concat_input False): 3x3 ConvModule(256) -> Dropout2d(0.1) ->
  1x1 classes, on one level (in_index 2: stride 16); its loss weighs 0.4 (XCiT's config).
Logits are resized bilinearly to the input (mmseg resizes them to the label in the loss).

segmentation-models-pytorch's UPerNetDecoder (0.6.0) is not used: it LayerNorms every input map
(`feature_norms`, an extra trainable layer mmseg's head does not have), hard-codes the PPM
bottleneck's norm, and its model's SegmentationHead has no dropout and upsamples x4 with
align_corners=True; it also has no auxiliary FCN head.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from transfer.segmentation.models import conv_bn_relu


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class UPerHead(nn.Module):
    """Maps (finest first) -> logits [B, K, h_0, w_0] at the finest map's size."""

    def __init__(
        self,
        in_channels: list[int],
        num_classes: int,
        channels: int = 512,
        pool_scales: tuple[int, ...] = (1, 2, 3, 6),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        top = in_channels[-1]
        self.ppm = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(scale), conv_bn_relu(top, channels, kernel_size=1))
            for scale in pool_scales
        )
        self.bottleneck = conv_bn_relu(top + len(pool_scales) * channels, channels)
        self.lateral = nn.ModuleList(
            conv_bn_relu(width, channels, kernel_size=1) for width in in_channels[:-1]
        )
        self.fpn_convs = nn.ModuleList(conv_bn_relu(channels, channels) for _ in in_channels[:-1])
        self.fpn_bottleneck = conv_bn_relu(len(in_channels) * channels, channels)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        top = maps[-1]
        pooled = [_resize(branch(top), top.shape[-2:]) for branch in self.ppm]
        laterals = [conv(x) for conv, x in zip(self.lateral, maps)]
        laterals.append(self.bottleneck(torch.cat([top, *pooled], dim=1)))
        for i in range(len(laterals) - 1, 0, -1):  # top-down pathway
            laterals[i - 1] = laterals[i - 1] + _resize(laterals[i], laterals[i - 1].shape[-2:])
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals)] + [laterals[-1]]
        size = outs[0].shape[-2:]
        fused = self.fpn_bottleneck(torch.cat([outs[0]] + [_resize(x, size) for x in outs[1:]], 1))
        return self.classifier(self.dropout(fused))


class UperNet(nn.Module):
    """backbone -> `features` -> `pyramid` -> UPerHead (+ auxiliary FCN head while training).

    forward returns logits [B, K, H, W] in eval mode and (logits, auxiliary logits) in training
    mode; the training loss is CE(logits) + aux_weight x CE(auxiliary logits).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        in_channels: list[int],
        features: Callable[[nn.Module, torch.Tensor], list[torch.Tensor]],
        pyramid: nn.Module,
        aux_weight: float = 0.4,
        aux_level: int = 2,
        aux_channels: int = 256,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.backbone, self.features, self.pyramid = backbone, features, pyramid
        self.decode = UPerHead(in_channels, num_classes, dropout=dropout)
        self.auxiliary = nn.Sequential(
            conv_bn_relu(in_channels[aux_level], aux_channels),
            nn.Dropout2d(dropout),
            nn.Conv2d(aux_channels, num_classes, 1),
        )
        self.aux_weight, self.aux_level = aux_weight, aux_level

    def forward(self, images: torch.Tensor):
        maps = self.pyramid(self.features(self.backbone, images))
        logits = _resize(self.decode(maps), images.shape[-2:])
        if not self.training:
            return logits
        return logits, _resize(self.auxiliary(maps[self.aux_level]), images.shape[-2:])


def mmseg_head_init(
    model: nn.Module, classifiers: Sequence[nn.Conv2d], xavier: Sequence[nn.Conv2d] = ()
) -> nn.Module:
    """mmcv/mmseg's initialisation of a segmenter's head (the backbone keeps its weights):
    every conv followed by a BN (a ConvModule) Kaiming-normal, fan_out, ReLU gain, with BN 1/0;
    the FPN neck's convs (`xavier`) Xavier-uniform with zero bias (mmseg FPN init_cfg); the
    class convs (`classifiers`, mmseg's conv_seg) normal(0, 0.01) with zero bias. Deconvs keep
    PyTorch's default, as in XCiT and mmseg's Feature2Pyramid."""
    for name, module in model.named_modules():
        if name.startswith("backbone") or not isinstance(module, nn.Sequential):
            continue
        if len(module) > 1 and isinstance(module[0], nn.Conv2d):
            if isinstance(module[1], nn.BatchNorm2d):
                nn.init.kaiming_normal_(module[0].weight, mode="fan_out", nonlinearity="relu")
                nn.init.ones_(module[1].weight)
                nn.init.zeros_(module[1].bias)
    for conv in xavier:
        nn.init.xavier_uniform_(conv.weight)
        nn.init.zeros_(conv.bias)
    for conv in classifiers:
        nn.init.normal_(conv.weight, std=0.01)
        nn.init.zeros_(conv.bias)
    return model
