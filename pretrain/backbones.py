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

`BACKBONES` is the single registry: name -> builder -> (module, feature_dim). ResNet builders take
(cifar_stem, stem_padding); the ViTs (pretrain/vit.py: vit_small_patch16, vit_base_patch16 and
the tests' vit_tiny_test) take (drop_path_rate, cls_token, final_norm, num_heads).

Padding modes (`PADDING_MODES`): "torchvision" (default; symmetric k // 2 on every conv and the
max-pool) and "tf-same", TensorFlow's "SAME" as the authors' Haiku ResNet uses it: for each
strided layer the total padding is computed from the input size n, total = max((ceil(n / s) - 1)
* s + k - n, 0), left = total // 2, right = the rest (tf.nn.conv2d docs, "SAME" padding). At 224
px that pads conv1 (2, 3), the max-pool (0, 1) and the stride-2 3x3 convs (0, 1) instead of
torchvision's symmetric (3, 3), (1, 1), (1, 1); stride-1 layers pad the same in both modes. The
state_dict keys are the same in both modes.
"""

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from pretrain.config import ConfigError
from pretrain.vit import VIT_ARCHS, build_vit

Block = type[BasicBlock] | type[Bottleneck]
PADDING_MODES = ("torchvision", "tf-same")


def tf_same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding of TensorFlow's "SAME" for one spatial dimension of `size`."""
    extent = (kernel - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + extent - size, 0)
    return total // 2, total - total // 2


def _same_pad(images: torch.Tensor, kernel, stride, dilation, value: float) -> torch.Tensor:
    top, bottom = tf_same_pads(images.shape[-2], kernel[0], stride[0], dilation[0])
    left, right = tf_same_pads(images.shape[-1], kernel[1], stride[1], dilation[1])
    return F.pad(images, (left, right, top, bottom), value=value)


class TFSameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding computed from each input's size (asymmetric)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        padded = _same_pad(images, self.kernel_size, self.stride, self.dilation, 0.0)
        return self._conv_forward(padded, self.weight, self.bias)


class TFSameMaxPool2d(nn.MaxPool2d):
    """MaxPool2d with TensorFlow "SAME" padding (padded with -inf, as tf.nn.max_pool)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pair = nn.modules.utils._pair
        padded = _same_pad(images, pair(self.kernel_size), pair(self.stride), (1, 1), -math.inf)
        return F.max_pool2d(padded, self.kernel_size, self.stride, 0, self.dilation)


def to_tf_same(model: nn.Module) -> nn.Module:
    """Swap every strided conv and max-pool of `model` for its "SAME" twin, in place, same keys.

    Stride-1 convs keep torchvision's symmetric k // 2, which equals "SAME" for odd kernels.
    """
    for name, child in list(model.named_children()):
        if isinstance(child, nn.Conv2d) and child.stride != (1, 1):
            twin = TFSameConv2d(
                child.in_channels,
                child.out_channels,
                child.kernel_size,
                child.stride,
                padding=0,
                dilation=child.dilation,
                groups=child.groups,
                bias=child.bias is not None,
                device=child.weight.device,
                dtype=child.weight.dtype,
            )
            twin.weight, twin.bias = child.weight, child.bias
            setattr(model, name, twin)
        elif isinstance(child, nn.MaxPool2d):
            setattr(model, name, TFSameMaxPool2d(child.kernel_size, child.stride))
        else:
            to_tf_same(child)
    return model


class ResNet(nn.Module):
    """ResNet v1 trunk with width multiplier; [B, 3, H, W] -> [B, 512k * block.expansion]."""

    def __init__(
        self,
        block: Block,
        layers: list[int],
        width_multiplier: int = 1,
        cifar_stem: bool = False,
        stem_padding: int | None = None,
    ) -> None:
        super().__init__()
        stem_width = 64 * width_multiplier
        if cifar_stem:
            # Small images (28-32 px), not in the paper: common practice keeps the resolution in the
            # stem so that a 32 px input reaches layer4 at 4x4. solo-learn pads this conv by 2
            # (`stem_padding=2`, its CIFAR runs), which gives 34x34 maps from 32 px.
            padding = 1 if stem_padding is None else stem_padding
            self.conv1 = nn.Conv2d(
                3, stem_width, kernel_size=3, stride=1, padding=padding, bias=False
            )
            self.maxpool: nn.Module = nn.Identity()
        else:
            padding = 3 if stem_padding is None else stem_padding
            self.conv1 = nn.Conv2d(
                3, stem_width, kernel_size=7, stride=2, padding=padding, bias=False
            )
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
    block: Block,
    layers: list[int],
    width_multiplier: int,
    *,
    cifar_stem: bool = False,
    stem_padding: int | None = None,
) -> tuple[nn.Module, int]:
    model = ResNet(block, layers, width_multiplier, cifar_stem, stem_padding)
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
    **{name: partial(build_vit, name) for name in VIT_ARCHS},
}
# The ViT options and their defaults (a ResNet refuses any other value).
VIT_DEFAULTS = {"drop_path_rate": 0.0, "cls_token": True, "final_norm": True, "num_heads": None}


def is_vit(name: str) -> bool:
    """Whether the registry entry `name` is a Vision Transformer (pretrain/vit.py)."""
    return name in VIT_ARCHS


def build_backbone(
    name: str,
    *,
    cifar_stem: bool = False,
    padding: str = "torchvision",
    stem_padding: int | None = None,
    drop_path_rate: float = 0.0,
    cls_token: bool = True,
    final_norm: bool = True,
    num_heads: int | None = None,
) -> tuple[nn.Module, int]:
    """Build the encoder `name`; returns (module mapping [B, 3, H, W] -> [B, dim], dim).

    BYOL v3, Sec. 3.3: representation = final average pool, no classifier. `cifar_stem=True` uses a
    3x3 stride-1 stem without max-pool for 28-32 px images (common practice, not in the paper).
    `padding="tf-same"` reproduces the authors' Haiku ResNet (TF "SAME", see the module
    docstring); `stem_padding` overrides the stem conv's symmetric padding (solo-learn's CIFAR
    stem: 2). ViTs (pretrain/vit.py) take `drop_path_rate`, `cls_token`, `final_norm` and
    `num_heads` (None: the architecture's own) instead; each family refuses the other's options
    with a ConfigError. Build inside `with torch.device("meta"):` to get shapes and counts
    without allocating weights.
    """
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}.")
    if padding not in PADDING_MODES:
        raise ValueError(f"Unknown padding {padding!r}; choose one of: {', '.join(PADDING_MODES)}.")
    vit_options = {
        "drop_path_rate": drop_path_rate,
        "cls_token": cls_token,
        "final_norm": final_norm,
        "num_heads": num_heads,
    }
    if is_vit(name):
        resnet_options = {
            "cifar_stem": cifar_stem,
            "padding": padding,
            "stem_padding": stem_padding,
        }
        if resnet_options != {"cifar_stem": False, "padding": "torchvision", "stem_padding": None}:
            raise ConfigError(
                f"{name} is a ViT: the ResNet options cifar_stem, padding and stem_padding do not "
                f"apply to it (got {resnet_options}); small images need a small patch size instead"
            )
        return BACKBONES[name](**vit_options)
    changed = {key: value for key, value in vit_options.items() if value != VIT_DEFAULTS[key]}
    if changed:
        raise ConfigError(
            f"{name} is a ResNet: the ViT options {sorted(changed)} apply to vit_* backbones only; "
            "leave them at their defaults (drop_path_rate 0, cls_token and final_norm true)"
        )
    if padding == "tf-same" and stem_padding is not None:
        raise ValueError("stem_padding applies to the torchvision padding mode only")
    model, feature_dim = BACKBONES[name](cifar_stem=cifar_stem, stem_padding=stem_padding)
    return (to_tf_same(model) if padding == "tf-same" else model), feature_dim


def vit_options(metadata: dict) -> dict:
    """The build_backbone options of the ViT an export's or import's `metadata` describes ([CLS]
    token, final norm; absent fields: DINO's ViT, both on); {} for a ResNet. Drop-path is a
    training-time option: evaluations build without it."""
    if not is_vit(metadata.get("arch") or ""):
        return {}
    return {
        "cls_token": bool(metadata.get("cls_token", True)),
        "final_norm": bool(metadata.get("final_norm", True)),
    }


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in module.parameters())


BACKBONE_FAMILIES = ("resnet", "vit", "any")  # what a dense protocol takes


def dense_backbone_problem(
    metadata: dict, protocol: str, takes: str, alternatives: str
) -> str | None:
    """Why dense protocol `protocol` refuses these weights, or None if it takes them.

    `takes` is the backbone family the protocol was published with: "resnet" (BYOL's detection,
    segmentation and depth transfer), "vit" (SelfPatch's ViT pyramids) or "any" (the frozen
    dense probes, which read a ResNet's conv5 map or a ViT's patch grid). `alternatives` ends
    the sentence with what to run instead.
    """
    if takes not in BACKBONE_FAMILIES:
        raise ValueError(f"takes must be one of {BACKBONE_FAMILIES}, not {takes!r}")
    arch = metadata.get("arch") or ""
    vit = is_vit(arch)
    if takes == "any" or (takes == "vit") == vit:
        return None
    family, wanted = ("a ViT", "ResNets") if vit else ("a ResNet", "ViTs")
    return f"{arch} is {family}, and {protocol} takes {wanted} only; {alternatives}"


VIT_CLASSIFICATION = (
    "evaluate this ViT with evaluate.linear, evaluate.knn, evaluate.semisup or "
    "transfer.classification"
)


def external_engine_problem(
    metadata: dict,
    protocol: str = "the detectron2/mmseg export",
    takes: str = "resnet",
    alternatives: str = VIT_CLASSIFICATION,
) -> str | None:
    """Why an external engine's ResNet (detectron2's, mmseg's: symmetric padding, the standard
    stem) would silently compute other features from these weights, or None if it would not.

    The authors' BYOL release needs TF "SAME" padding and solo-learn's CIFAR runs a stem padded
    by 2 (evaluate/importers/): only our own encoder reproduces them. The other family than
    `takes` is refused (dense_backbone_problem): the detectron2 export writes ResNet configs
    only; the mmseg export passes its protocol's family (ViT protocols write mmseg ViT configs).
    """
    problem = dense_backbone_problem(metadata, protocol, takes, alternatives)
    if problem:
        return problem
    if is_vit(metadata.get("arch") or ""):
        return None  # the padding and stem options are a ResNet's
    if metadata.get("padding", "torchvision") != "torchvision":
        return (
            f"these weights expect {metadata['padding']} padding (the authors' release), which "
            "detectron2's and mmseg's ResNets do not have; evaluate them with --engine torchvision"
        )
    if metadata.get("stem_padding") is not None:
        return (
            f"these weights expect a stem padded by {metadata['stem_padding']}, which detectron2's "
            "and mmseg's ResNets do not have; evaluate them with --engine torchvision"
        )
    return None
