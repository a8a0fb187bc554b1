"""Encoders for BYOL: ResNet v1 trunks that map images to pooled features, by name.

BYOL v3, Sec. 3.3 and Table 1: the encoder is a ResNet-50 v1 (post-activation) whose
representation is the 2048-d output of the final average pool; the wider and deeper encoders
R50 2x (94M params), R50 4x (375M) and R200 2x (250M) multiply the width of *every* layer, as in
SimCLR (Chen et al. 2020): stem 64k, stage base widths 64k/128k/256k/512k, bottleneck outputs 4x
that. torchvision's `wide_resnet50_2` only widens the bottleneck's inner convs (66.8M params): a
different network, not used here.

Blocks are torchvision's `BasicBlock`/`Bottleneck` (ResNet v1.5: the stride sits on the 3x3 conv, as
in the authors' Haiku code) and the state_dict keys equal torchvision's ResNet keys minus `fc.*`, so
torchvision checkpoints load with `strict=True`.

`BACKBONES` is the single registry: name -> builder(*, cifar_stem) -> (module, feature_dim). A ViT
(e.g. timm ViT-S/16) is added as one more entry.
"""

from collections.abc import Callable
from functools import partial

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

Block = type[BasicBlock] | type[Bottleneck]


class ResNet(nn.Module):
    """ResNet v1 trunk with width multiplier; [B, 3, H, W] -> [B, 512k * block.expansion]."""

    def __init__(
        self, block: Block, layers: list[int], width_multiplier: int = 1, cifar_stem: bool = False
    ) -> None:
        super().__init__()
        stem_width = 64 * width_multiplier
        if cifar_stem:
            # Small images (28-32 px), not in the paper: common practice keeps the resolution in the
            # stem so that a 32 px input reaches layer4 at 4x4.
            self.conv1 = nn.Conv2d(3, stem_width, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, stem_width, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)

        self.in_channels = stem_width
        base_widths = [w * width_multiplier for w in (64, 128, 256, 512)]
        self.layer1 = self._make_stage(block, base_widths[0], layers[0], stride=1)
        self.layer2 = self._make_stage(block, base_widths[1], layers[1], stride=2)
        self.layer3 = self._make_stage(block, base_widths[2], layers[2], stride=2)
        self.layer4 = self._make_stage(block, base_widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = base_widths[3] * block.expansion

        # torchvision's init. Not in the paper; the authors' Haiku code differs: fan-in truncated
        # normal convs and (Haiku's BlockV1) a zero-initialised scale in each bottleneck's last BN.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _make_stage(self, block: Block, width: int, num_blocks: int, stride: int) -> nn.Sequential:
        out_channels = width * block.expansion
        downsample = None
        if stride != 1 or self.in_channels != out_channels:
            downsample = nn.Sequential(
                nn.Conv2d(self.in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        blocks = [block(self.in_channels, width, stride, downsample)]
        self.in_channels = out_channels
        blocks += [block(out_channels, width) for _ in range(num_blocks - 1)]
        return nn.Sequential(*blocks)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))  # [B, 64k, H/4, W/4]
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # [B, feature_dim, H/32, W/32]
        return torch.flatten(self.avgpool(x), 1)  # [B, feature_dim]


def _resnet(
    block: Block, layers: list[int], width_multiplier: int, *, cifar_stem: bool = False
) -> tuple[nn.Module, int]:
    model = ResNet(block, layers, width_multiplier, cifar_stem)
    return model, model.feature_dim


# name -> builder(*, cifar_stem) -> (module, feature_dim). Depths as torchvision; R200 as in
# He et al. 2016 (identity mappings) and the authors' code: [3, 24, 36, 3].
BACKBONES: dict[str, Callable[..., tuple[nn.Module, int]]] = {
    "resnet18": partial(_resnet, BasicBlock, [2, 2, 2, 2], 1),
    "resnet34": partial(_resnet, BasicBlock, [3, 4, 6, 3], 1),
    "resnet50": partial(_resnet, Bottleneck, [3, 4, 6, 3], 1),
    "resnet50x2": partial(_resnet, Bottleneck, [3, 4, 6, 3], 2),
    "resnet50x4": partial(_resnet, Bottleneck, [3, 4, 6, 3], 4),
    "resnet101": partial(_resnet, Bottleneck, [3, 4, 23, 3], 1),
    "resnet152": partial(_resnet, Bottleneck, [3, 8, 36, 3], 1),
    "resnet200": partial(_resnet, Bottleneck, [3, 24, 36, 3], 1),
    "resnet200x2": partial(_resnet, Bottleneck, [3, 24, 36, 3], 2),
}


def build_backbone(name: str, *, cifar_stem: bool = False) -> tuple[nn.Module, int]:
    """Build the encoder `name`; returns (module mapping [B, 3, H, W] -> [B, dim], dim).

    BYOL v3, Sec. 3.3: representation = final average pool, no classifier. `cifar_stem=True` uses a
    3x3 stride-1 stem without max-pool for 28-32 px images (common practice, not in the paper).
    Build inside `with torch.device("meta"):` to get shapes and counts without allocating weights.
    """
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}.")
    return BACKBONES[name](cifar_stem=cifar_stem)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in module.parameters())
