"""The depth network of protocol `byol-paper-depth/1`: ResNet conv5 -> FCRN up-projection decoder.

BYOL v3, App. D.6 follows Laina et al. 2016 ("Deeper Depth Prediction with Fully Convolutional
Residual Networks", FCRN). Every detail below is read from the authors' TensorFlow port,
`iro-cp/FCRN-DepthPrediction` @4212943719de2ce7e287a289e9fb2b4b54bc2417, files
`tensorflow/models/fcrn.py` (`ResNet50UpProj.setup`) and `tensorflow/models/network.py`
(`conv`, `batch_normalization`, `unpool_as_conv`, `up_project`, `interleave`):

- bridge: `layer1` = 1x1 conv 2048 -> 1024 with bias, then `layer1_BN` (no ReLU);
- four `up_project` blocks 1024 -> 512 -> 256 -> 128 -> 64, each doubling the size;
- `dropout(keep_prob=1.)`, a literal in fcrn.py: the released model has no dropout, and the rate
  Laina trained with is not in the repository; hence `dropout=0.0` by default;
- `ConvPred`: 3x3 conv 64 -> 1 with bias and, as `Network.conv` defaults to `relu=True`, a ReLU;
- every conv there is biased (`biased=True` default) and every BN has epsilon 1e-4 and an affine
  scale/offset. The convs' init is not stated: the TF port only restores converted weights (its
  variables take TF's default glorot-uniform just to be overwritten), so the new layers here keep
  PyTorch's default init (not the authors' choice; theirs was MatConvNet and is not published).

The trunk is the project's ResNet (pretrain/backbones.py) read to conv5 by
`transfer.segmentation.models.resnet_stages`; its weights live under `backbone.` with their
torchvision names. A 228x304 input gives conv5 8x10 and a 128x160 depth map (16x conv5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from transfer.segmentation.models import backbone_keys_loaded, resnet_stages

__all__ = [
    "DepthNetwork",
    "FastUpProjection",
    "UnpoolAsConv",
    "backbone_keys_loaded",
    "build_depth_network",
    "interleave_quadrants",
]

BN_EPSILON = 1e-4  # network.py, batch_normalization: epsilon = 1e-4


def interleave_quadrants(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor
) -> torch.Tensor:
    """Interleave four [B, C, H, W] maps into [B, C, 2H, 2W] (A, C even rows; B, D odd rows).

    Y[2i, 2j] = A, Y[2i + 1, 2j] = B, Y[2i, 2j + 1] = C, Y[2i + 1, 2j + 1] = D.

    network.py: `left = interleave([A, B], axis=1)` stacks along NHWC axis 1 = rows (the comment
    there says "columns", the reshape says rows), `right = interleave([C, D], axis=1)`, then
    `interleave([left, right], axis=2)` alternates columns. So A, C fill the even rows and B, D the
    odd rows: the 2-row kernels (B: 2x3, D: 2x2) give the odd rows, the 2-column ones (C, D) the
    odd columns, as MatConvNet's matlab/+dagnn/Combine.m places them too.
    """
    even_rows = torch.stack((a, c), dim=-1).flatten(-2)  # [B, C, H, 2W]: A, C, A, C, ...
    odd_rows = torch.stack((b, d), dim=-1).flatten(-2)  # [B, C, H, 2W]: B, D, B, D, ...
    return torch.stack((even_rows, odd_rows), dim=-2).flatten(-3, -2)  # [B, C, 2H, 2W]


class UnpoolAsConv(nn.Module):
    """Laina's fast up-convolution: four biased convs (3x3, 2x3, 3x2, 2x2) interleaved into 2x.

    network.py `unpool_as_conv` (kernel sides H x W): A 3x3 with SAME padding (1 on every side);
    B 2x3 VALID on the input padded top 1, bottom 0, left 1, right 1; C 3x2 VALID on top 1,
    bottom 1, left 1, right 0; D 2x2 VALID on top 1, left 1. Thus B and D look at input rows
    i-1, i and C and D at columns j-1, j (top/left, not bottom/right).

    Laina's "equals 2x2 un-pooling + 5x5 conv" (value at the top-left of each cell, padding 2,
    sub-kernels A = K[0::2, 0::2], B = K[1::2, 0::2], C = K[0::2, 1::2], D = K[1::2, 1::2]) holds
    exactly only with B, C, D padded bottom/right. With the authors' top/left padding, kept here,
    the odd rows (columns) equal that 5x5 output two rows (columns) earlier: Y[2i+1] = out[2i-1]
    (tests/transfer/depth/test_models.py checks both).
    """

    # F.pad order (left, right, top, bottom), from network.py's tf.pad paddings
    PAD_B = (1, 1, 1, 0)  # [[0, 0], [1, 0], [1, 1], [0, 0]]
    PAD_C = (1, 0, 1, 1)  # [[0, 0], [1, 1], [1, 0], [0, 0]]
    PAD_D = (1, 0, 1, 0)  # [[0, 0], [1, 0], [1, 0], [0, 0]]

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(in_channels, out_channels, (3, 3), padding=1)
        self.conv_b = nn.Conv2d(in_channels, out_channels, (2, 3))
        self.conv_c = nn.Conv2d(in_channels, out_channels, (3, 2))
        self.conv_d = nn.Conv2d(in_channels, out_channels, (2, 2))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        a = self.conv_a(features)  # [B, C_out, H, W] each
        b = self.conv_b(F.pad(features, self.PAD_B))
        c = self.conv_c(F.pad(features, self.PAD_C))
        d = self.conv_d(F.pad(features, self.PAD_D))
        return interleave_quadrants(a, b, c, d)  # [B, C_out, 2H, 2W]


class FastUpProjection(nn.Module):
    """Laina's fast up-projection: ReLU(branch 1 + branch 2), output 2x the input size.

    network.py `up_project`: branch 1 = unpool_as_conv -> BN -> ReLU -> 3x3 conv (SAME, biased)
    -> BN; branch 2 = unpool_as_conv -> BN (its own four convs); then add and ReLU.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.unpool_1 = UnpoolAsConv(in_channels, out_channels)
        self.bn_1 = nn.BatchNorm2d(out_channels, eps=BN_EPSILON)
        self.conv = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.bn_conv = nn.BatchNorm2d(out_channels, eps=BN_EPSILON)
        self.unpool_2 = UnpoolAsConv(in_channels, out_channels)
        self.bn_2 = nn.BatchNorm2d(out_channels, eps=BN_EPSILON)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        branch_1 = F.relu(self.bn_1(self.unpool_1(features)))  # [B, C_out, 2H, 2W]
        branch_1 = self.bn_conv(self.conv(branch_1))
        branch_2 = self.bn_2(self.unpool_2(features))
        return F.relu(branch_1 + branch_2)


class DepthNetwork(nn.Module):
    """ResNet trunk -> 1x1 bridge + BN -> up-projections -> dropout -> 3x3 conv -> ReLU (depth).

    fcrn.py `ResNet50UpProj`: `layer1` (1x1, bias) + `layer1_BN`, `up_project` x 4 with widths
    512, 256, 128, 64, `drop` (keep_prob 1.), `ConvPred` (3x3 -> 1, bias, ReLU by default).
    `output_relu=False` drops that last ReLU (not in the authors' code).
    """

    def __init__(
        self,
        backbone: nn.Module,
        decoder_widths: tuple[int, ...] = (512, 256, 128, 64),
        bridge_channels: int = 1024,
        dropout: float = 0.0,
        output_relu: bool = True,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        conv5_channels = backbone.feature_dim  # 2048 for ResNet-50, 512 for ResNet-18
        self.bridge = nn.Sequential(
            nn.Conv2d(conv5_channels, bridge_channels, 1),
            nn.BatchNorm2d(bridge_channels, eps=BN_EPSILON),
        )
        widths = (bridge_channels, *decoder_widths)
        self.decoder = nn.Sequential(
            *(FastUpProjection(w_in, w_out) for w_in, w_out in zip(widths, widths[1:]))
        )
        self.dropout = nn.Dropout(dropout)  # tf.nn.dropout: element-wise, not channel-wise
        self.predictor = nn.Conv2d(widths[-1], 1, 3, padding=1)
        self.output_relu = output_relu

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        conv5 = resnet_stages(self.backbone, images)[-1]  # [B, feature_dim, H/32, W/32]
        decoded = self.decoder(self.bridge(conv5))  # [B, 64, 16 h5, 16 w5]
        depth = self.predictor(self.dropout(decoded))  # [B, 1, 16 h5, 16 w5]
        return F.relu(depth) if self.output_relu else depth


def build_depth_network(backbone: nn.Module, dropout: float = 0.0) -> DepthNetwork:
    """The `byol-paper-depth/1` network on `backbone`, every parameter trainable, in train mode.

    BYOL v3 App. D.6 fine-tunes the whole network ("the same protocol as [Laina]").
    """
    if not hasattr(backbone, "layer4") or not hasattr(backbone, "feature_dim"):
        raise ValueError(
            "the depth network needs a ResNet trunk from pretrain.backbones (layer1..layer4 and "
            f"feature_dim); got {type(backbone).__name__}"
        )
    for parameter in backbone.parameters():
        parameter.requires_grad_(True)  # load_encoder returns it frozen; fine-tuning unfreezes
    return DepthNetwork(backbone, dropout=dropout).train()
