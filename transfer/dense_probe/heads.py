"""Dense probe heads: one per candidate learning rate, all trained in one pass on the same maps.

As evaluate/heads.py does for the classification linear probe: every head starts from the same
weights (drawn from `seed`), each lives in its own optimiser parameter group with its own LR, and
the training loss is the sum of the heads' losses, so each head gets exactly the gradient of its
own loss and follows the trajectory of a single-LR run with the same seed
(tests/transfer/dense_probe/test_heads.py checks it). Heads share nothing, BN included.

- `SegmentationProbes`: DINOv2's linear segmentation head (dinov2/eval/segmentation/models/
  decode_heads/linear_head.py, BNHead: SyncBatchNorm over the features, then mmseg's `cls_seg`
  1x1 conv), here BN + 1x1 conv on the frozen map (maps.py: a ResNet's conv5, a ViT's normed
  last-block patch tokens). The 1x1 conv is initialised as mmseg's
  BaseDecodeHead does (init_cfg Normal std 0.01 on conv_seg, zero bias); no dropout (ours: a
  linear probe). Logits come at the feature resolution; `upsample_to` resizes them bilinearly
  (align_corners=False) to the label size, as mmseg's decode head does before its loss.
- `DepthBinProbes`: DINOv2's linear depth head (dinov2/hub/depthers.py:_make_dinov2_linear_depth_
  head, BNHead in dinov2/eval/depth/models/decode_heads/linear_head.py, depth_pred in
  decode_head.py): features upsampled x4 bilinearly, a 1x1 conv to `bins` logits (BN commented
  out in DINOv2: none here), "linear" normalisation ReLU(logit) + 0.1 divided by its sum over the
  bins, depth = sum_k p_k bin_k with bins = linspace(min_depth, max_depth, bins) ("UD"). DINOv2
  concatenates each patch token with the [CLS] token: a ViT's map arrives so (maps.py,
  2 x embed_dim channels); a ResNet has no [CLS] token, so the head sees the conv5 map alone.
  The conv keeps PyTorch's default init (DINOv2's depth head sets none).
On a ResNet both are OUR adaptation of DINOv2's ViT probes; neither protocol is published.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LINEAR_NORM_EPS = 0.1  # DINOv2 decode_head.py depth_pred, norm_strategy "linear" (after AdaBins)
DEPTH_UPSAMPLE = 4  # dinov2/hub/depthers.py: BNHead(upsample=4)


def upsample_to(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=False) of [..., C, h, w] to [..., C, *size]."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    lead = maps.shape[:-3]
    flat = maps.reshape(-1, *maps.shape[-3:])
    resized = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return resized.reshape(*lead, *resized.shape[-3:])


class _Probes(nn.Module):
    """`num_heads` copies of one head with identical initial weights; forward -> [n, ...]."""

    def __init__(self, make_head, num_heads: int, seed: int) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            first = make_head()
        self.heads = nn.ModuleList([first])
        for _ in range(num_heads - 1):
            head = make_head()
            head.load_state_dict(first.state_dict())
            self.heads.append(head)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        prepared = self.prepare(features)
        return torch.stack([self.head_forward(i, prepared) for i in range(len(self.heads))])

    def prepare(self, features: torch.Tensor) -> torch.Tensor:
        """What every head reads (parameter-free, shared): the features themselves here."""
        return features

    def head_forward(self, index: int, prepared: torch.Tensor) -> torch.Tensor:
        """Head `index`'s output on `prepare(features)` (one head at a time: the training loop
        steps head by head, so only one head's full-resolution output is in memory)."""
        return self.heads[index](prepared)

    def finite(self) -> list[bool]:
        """Per head: are all its weights (and BN statistics) finite (False: that LR diverged)."""
        return [
            all(
                bool(torch.isfinite(t).all())
                for t in head.state_dict().values()
                if t.is_floating_point()
            )
            for head in self.heads
        ]


def _bn_conv(channels: int, num_classes: int) -> nn.Sequential:
    conv = nn.Conv2d(channels, num_classes, 1)
    nn.init.normal_(conv.weight, std=0.01)  # mmseg BaseDecodeHead init_cfg on conv_seg
    nn.init.zeros_(conv.bias)
    return nn.Sequential(nn.BatchNorm2d(channels), conv)


class SegmentationProbes(_Probes):
    """BN + 1x1 conv per head: features [B, C, h, w] -> logits [n, B, K, h, w]."""

    def __init__(self, num_heads: int, channels: int, num_classes: int, seed: int = 0) -> None:
        super().__init__(lambda: _bn_conv(channels, num_classes), num_heads, seed)


def linear_normalised(logits: torch.Tensor) -> torch.Tensor:
    """DINOv2's "linear" bin probabilities over dim 1: (ReLU(l) + 0.1) / sum_k (ReLU(l_k) + 0.1)."""
    weights = torch.relu(logits) + LINEAR_NORM_EPS
    return weights / weights.sum(dim=1, keepdim=True)


class DepthBinProbes(_Probes):
    """1x1 conv to depth bins per head: features [B, C, h, w] -> depth [n, B, 1, 4h, 4w] (metres).

    The x4 upsampling of the features is shared by every head (it has no parameters).
    """

    def __init__(
        self,
        num_heads: int,
        channels: int,
        bins: int = 256,
        min_depth: float = 1e-3,
        max_depth: float = 10.0,
        seed: int = 0,
    ) -> None:
        super().__init__(lambda: nn.Conv2d(channels, bins, 1), num_heads, seed)
        # bin centres, uniformly spaced ("UD"): DINOv2 decode_head.py depth_pred
        self.register_buffer("bin_centres", torch.linspace(min_depth, max_depth, bins))

    def prepare(self, features: torch.Tensor) -> torch.Tensor:
        """Features upsampled x4 bilinearly: [B, C, h, w] -> [B, C, 4h, 4w] (DINOv2 BNHead)."""
        return F.interpolate(
            features, scale_factor=DEPTH_UPSAMPLE, mode="bilinear", align_corners=False
        )

    def head_forward(self, index: int, prepared: torch.Tensor) -> torch.Tensor:
        """Depth [B, 1, 4h, 4w] of head `index` on the upsampled features."""
        probabilities = linear_normalised(self.heads[index](prepared))  # [B, bins, 4h, 4w]
        return torch.einsum("bkhw,k->bhw", probabilities, self.bin_centres).unsqueeze(1)
