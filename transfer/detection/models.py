"""Faster R-CNN R50-C4, Faster R-CNN R50-FPN and Mask R-CNN R50-FPN from torchvision's parts,
around a backbone loaded strictly by evaluate.features.load_encoder.

    c4        stem..layer3 (stride 16) -> RPN on one map; RoIAlign 14x14 -> layer4 (res5) -> mean
              pool -> class + class-specific box predictor: detectron2's Res5ROIHeads ("C4")
    fpn       stem..layer4 -> FPN P2-P6 (256 ch) -> RPN; RoIAlign 7x7 per level -> box head
    mask-fpn  fpn + the mask branch (4 convs 256 ch, deconv, 28x28 mask per class)
    vit-mask-fpn  mask-fpn on a ViT: blocks `blocks` -> the pyramid of vit_pyramid.py (strides
              p/4 .. 2p) -> FPN P2-P6 -> the same heads (SelfPatch's Mask R-CNN)

Norm options (`norm`):
    frozen-bn  every backbone BN frozen (affine and statistics fixed; torchvision FrozenBatchNorm2d,
               detectron2's default "FrozenBN"); new layers without norm (detectron2's defaults:
               2fc box head)
    syncbn     backbone BN trained (SyncBatchNorm when a process group is running, else plain BN:
               one process holding the whole batch computes the statistics SyncBN gathers from
               all GPUs);
               new layers with BN: C4 gets MoCo's extra norm after res5 (Res5ROIHeadsExtraNorm,
               moco/detection/train_net.py); FPN, 4conv1fc box head and mask head get norm
    gn         backbone BN frozen; new layers with GroupNorm(32): FPN, 4conv1fc box head, mask head
               (detectron2's GN configs), C4: GN after res5
For a ViT (vit-mask-fpn) `norm` concerns the new layers only ("frozen-bn": none, as SelfPatch's
mmdet config) and `freeze_at` nothing: every ViT tensor is fine-tuned; the pyramid's BN trains.
Stages below `freeze_at` (detectron2's BACKBONE.FREEZE_AT: 1 = stem, 2 = stem + res2, ...) have
no gradients and frozen BN whatever the norm.

Resizing (`resize`): "shortest-edge" (detectron2's ResizeShortestEdge: a random short side from
`train_sizes`, long side at most `max_size`; test: `test_size`) or "longest-edge" (the BYOL paper's
multi-scale training: the long side is a random choice of `train_sizes`; test: `test_size`) or
"detr" (training images arrive resized and cropped by the data pipeline, detr_augment.py, and
pass unchanged; test: as shortest-edge).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import (
    FastRCNNConvFCHead,
    FastRCNNPredictor,
    TwoMLPHead,
)
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from pretrain.augment import IMAGENET_MEAN, IMAGENET_STD
from pretrain.vit import ViTEncoder
from transfer.detection.vit_pyramid import ViTDetectionBody

MODELS = ("c4", "fpn", "mask-fpn", "vit-mask-fpn")
VIT_MODELS = ("vit-mask-fpn",)  # take a ViT encoder
RESNET_MODELS = tuple(m for m in MODELS if m not in VIT_MODELS)  # take a ResNet encoder
MASK_MODELS = ("mask-fpn", "vit-mask-fpn")  # predict instance masks (COCO)
NORMS = ("frozen-bn", "syncbn", "gn")
RESIZES = ("shortest-edge", "longest-edge", "detr")
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")  # freeze_at k freezes STAGES[:k]
_NO_SHORT_SIDE_LIMIT = 100_000  # longest-edge resizing: the short side never limits the scale


@dataclass(frozen=True)
class DetectorSpec:
    """What to build; the protocol presets (protocols.py) fill it and cite the values."""

    model: str  # one of MODELS
    num_classes: int  # object classes, background excluded
    norm: str = "frozen-bn"  # one of NORMS
    freeze_at: int = 2  # detectron2 BACKBONE.FREEZE_AT
    resize: str = "shortest-edge"  # one of RESIZES
    train_sizes: tuple[int, ...] = (800,)
    test_size: int = 800
    max_size: int = 1333  # shortest-edge only: cap of the long side
    image_mean: tuple[float, float, float] = IMAGENET_MEAN  # on RGB in [0, 1]
    image_std: tuple[float, float, float] = IMAGENET_STD
    rpn_pre_nms_train: int = 2000
    rpn_pre_nms_test: int = 1000
    rpn_post_nms_train: int = 2000
    rpn_post_nms_test: int = 1000
    rpn_batch_per_image: int = 256  # detectron2 RPN.BATCH_SIZE_PER_IMAGE
    roi_batch_per_image: int = 512  # detectron2 ROI_HEADS.BATCH_SIZE_PER_IMAGE
    detections_per_image: int = 100  # detectron2 TEST.DETECTIONS_PER_IMAGE
    roi_sampling_ratio: int = 2  # RoIAlign sampling points (torchvision's default; mmdet: 0)
    blocks: tuple[int, ...] = (3, 5, 7, 11)  # vit-mask-fpn: the ViT blocks of the pyramid


class ResNetTrunk(nn.Module):
    """The encoder's stem and `stages`, returning the outputs of `returned` stages as {"0", ...}.

    Keeps the encoder's module names (conv1, bn1, layer1, ...), so its state-dict keys are the
    encoder's keys: loading is an explicit prefix, see `detector_key`.
    """

    def __init__(self, encoder: nn.Module, stages: tuple[str, ...], returned: tuple[str, ...]):
        super().__init__()
        self.conv1, self.bn1, self.relu = encoder.conv1, encoder.bn1, encoder.relu
        self.maxpool = encoder.maxpool
        self.stages, self.returned = stages, returned
        for name in stages:
            setattr(self, name, getattr(encoder, name))
        self.out_channels = stage_channels(getattr(encoder, stages[-1]))

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))  # [B, 64k, H/4, W/4]
        outputs = OrderedDict()
        for name in self.stages:
            x = getattr(self, name)(x)
            if name in self.returned:
                outputs[str(len(outputs))] = x
        return outputs


class Res5BoxHead(nn.Module):
    """detectron2's C4 box head: res5 (the encoder's layer4, stride 2) on 14x14 RoI features,
    an optional extra norm (MoCo's Res5ROIHeadsExtraNorm), mean pool: [R, C4, 14, 14] -> [R, C5]."""

    def __init__(self, layer4: nn.Module, extra_norm: nn.Module | None) -> None:
        super().__init__()
        self.layer4 = layer4
        self.norm = extra_norm if extra_norm is not None else nn.Identity()

    def forward(self, roi_features: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.layer4(roi_features))  # [R, C5, 7, 7]
        return x.mean(dim=(2, 3))  # [R, C5]


class DetectionResize(GeneralizedRCNNTransform):
    """torchvision's normalise-resize-batch transform with the spec's resize rule (module doc)."""

    def __init__(self, spec: DetectorSpec) -> None:
        super().__init__(spec.train_sizes, spec.max_size, spec.image_mean, spec.image_std)
        self.spec = spec

    def resize(self, image, target=None):
        if self.training and self.spec.resize == "detr":  # resized by the data pipeline
            return image, target
        if self.spec.resize == "detr":
            self.min_size, self.max_size = (self.spec.test_size,), self.spec.max_size
            return super().resize(image, target)
        size = self.torch_choice(self.spec.train_sizes) if self.training else self.spec.test_size
        if self.spec.resize == "longest-edge":
            self.min_size, self.max_size = (_NO_SHORT_SIDE_LIMIT,), size
        else:
            self.min_size, self.max_size = (size,), self.spec.max_size
        return super().resize(image, target)


def stage_channels(stage: nn.Module) -> int:
    """Output channels of a ResNet stage: the features of its last block's last BN."""
    norms = [m for m in stage[-1].modules() if isinstance(m, nn.BatchNorm2d | FrozenBatchNorm2d)]
    return (
        norms[-1].num_features
        if isinstance(norms[-1], nn.BatchNorm2d)
        else norms[-1].weight.numel()
    )


def frozen_batchnorm(module: nn.Module) -> nn.Module:
    """`module` with every BatchNorm2d replaced by a FrozenBatchNorm2d holding the same values."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(frozen, name).copy_(getattr(module, name).detach())
        return frozen
    for name, child in module.named_children():
        setattr(module, name, frozen_batchnorm(child))
    return module


def prepare_backbone(encoder: nn.Module, spec: DetectorSpec) -> None:
    """Trainability and BN mode of the encoder's stages, in place (see the module doc)."""
    for parameter in encoder.parameters():
        parameter.requires_grad_(True)
    for index, stage in enumerate(STAGES):
        frozen_stage = index < spec.freeze_at
        names = ("conv1", "bn1") if stage == "stem" else (stage,)
        for name in names:
            module = getattr(encoder, name)
            if frozen_stage or spec.norm != "syncbn":
                setattr(encoder, name, frozen_batchnorm(module))
            if frozen_stage:
                for parameter in getattr(encoder, name).parameters():
                    parameter.requires_grad_(False)


def new_layer_norm(spec: DetectorSpec):
    """Norm factory for new layers (channels -> module), or None: see NORMS in the module doc."""
    return {"frozen-bn": None, "syncbn": nn.BatchNorm2d, "gn": partial(nn.GroupNorm, 32)}[spec.norm]


def build_detector(encoder: nn.Module, spec: DetectorSpec) -> nn.Module:
    """The detector `spec.model` around `encoder` (its modules are moved in, weights untouched)."""
    if spec.model not in MODELS or spec.norm not in NORMS or spec.resize not in RESIZES:
        raise ValueError(f"unknown model/norm/resize in {spec}")
    if not 0 <= spec.freeze_at <= len(STAGES):
        raise ValueError(f"freeze_at must be in 0..{len(STAGES)}, not {spec.freeze_at}")
    if (spec.model in VIT_MODELS) != isinstance(encoder, ViTEncoder):
        kind = "a ViT" if spec.model in VIT_MODELS else "a ResNet"
        raise ValueError(f"model {spec.model} takes {kind} encoder, not {type(encoder).__name__}")
    if spec.model not in VIT_MODELS:
        prepare_backbone(encoder, spec)
    norm = new_layer_norm(spec)
    common = dict(
        rpn_pre_nms_top_n_train=spec.rpn_pre_nms_train,
        rpn_pre_nms_top_n_test=spec.rpn_pre_nms_test,
        rpn_post_nms_top_n_train=spec.rpn_post_nms_train,
        rpn_post_nms_top_n_test=spec.rpn_post_nms_test,
        rpn_batch_size_per_image=spec.rpn_batch_per_image,
        box_batch_size_per_image=spec.roi_batch_per_image,
        box_detections_per_img=spec.detections_per_image,
    )
    if spec.model == "c4":
        detector = _c4(encoder, spec, norm, common)
    else:
        detector = _fpn(encoder, spec, norm, common)
    detector.transform = DetectionResize(spec)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        detector = nn.SyncBatchNorm.convert_sync_batchnorm(detector)
    return detector


def _c4(encoder: nn.Module, spec: DetectorSpec, norm, common: dict) -> nn.Module:
    trunk = ResNetTrunk(encoder, ("layer1", "layer2", "layer3"), ("layer3",))  # stride 16
    res5_channels = stage_channels(encoder.layer4)
    extra_norm = norm(res5_channels) if norm is not None else None
    anchors = AnchorGenerator(sizes=((32, 64, 128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),))
    return FasterRCNN(
        trunk,
        num_classes=None,
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(trunk.out_channels, anchors.num_anchors_per_location()[0]),
        # DEVIATION(roialign): torchvision's RoIAlign (aligned=False); detectron2 uses ROIAlignV2.
        box_roi_pool=MultiScaleRoIAlign(["0"], output_size=14, sampling_ratio=0),
        box_head=Res5BoxHead(encoder.layer4, extra_norm),
        box_predictor=FastRCNNPredictor(res5_channels, spec.num_classes + 1),
        **common,
    )


def _fpn_body(encoder: nn.Module, spec: DetectorSpec) -> tuple[nn.Module, list[int]]:
    """(body returning {"0".."3"} at strides 4..32, its channels): ResNet stages or ViT pyramid."""
    if spec.model in VIT_MODELS:
        body = ViTDetectionBody(encoder, spec.blocks)
        return body, [body.out_channels] * len(spec.blocks)
    stages = ("layer1", "layer2", "layer3", "layer4")
    channels = [stage_channels(getattr(encoder, name)) for name in stages]
    return ResNetTrunk(encoder, stages, stages), channels


def _fpn(encoder: nn.Module, spec: DetectorSpec, norm, common: dict) -> nn.Module:
    body, channels = _fpn_body(encoder, spec)
    backbone = FpnBackbone(body, channels, norm)
    # DEVIATION(roialign): torchvision's RoIAlign (aligned=False); mmcv/detectron2 align.
    levels = ["0", "1", "2", "3"]
    box_pool = MultiScaleRoIAlign(levels, 7, sampling_ratio=spec.roi_sampling_ratio)
    mask_pool = MultiScaleRoIAlign(levels, 14, sampling_ratio=spec.roi_sampling_ratio)
    if norm is None:  # detectron2 "2fc" box head
        box_head = TwoMLPHead(backbone.out_channels * 7 * 7, 1024)
    else:  # detectron2 "4conv1fc" with norm
        box_head = FastRCNNConvFCHead((backbone.out_channels, 7, 7), [256] * 4, [1024], norm)
    box_predictor = FastRCNNPredictor(1024, spec.num_classes + 1)
    if spec.model == "fpn":
        return FasterRCNN(
            backbone,
            box_roi_pool=box_pool,
            box_head=box_head,
            box_predictor=box_predictor,
            num_classes=None,
            **common,
        )
    mask_head = MaskRCNNHeads(backbone.out_channels, [256] * 4, 1, norm_layer=norm)
    return MaskRCNN(
        backbone,
        num_classes=spec.num_classes + 1,
        box_roi_pool=box_pool,
        box_head=box_head,
        box_predictor=None,
        mask_roi_pool=mask_pool,
        mask_head=mask_head,
        **common,
    )


class FpnBackbone(nn.Module):
    """ResNet trunk or ViT pyramid -> FPN with P6 by max pool (mmdet FPN num_outs 5 without
    extra convs): {"0".."3", "pool"}, 256 channels each."""

    def __init__(self, body: nn.Module, in_channels: list[int], norm) -> None:
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(in_channels, 256, LastLevelMaxPool(), norm_layer=norm)
        self.out_channels = 256

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(self.body(images))


def detector_key(model: str, encoder_key: str) -> str:
    """Where the encoder's tensor `encoder_key` lives in the detector's state dict."""
    if model == "c4":
        if encoder_key.startswith("layer4."):
            return "roi_heads.box_head." + encoder_key
        return "backbone." + encoder_key
    if model in VIT_MODELS:
        return "backbone.body.encoder." + encoder_key
    return "backbone.body." + encoder_key


def check_backbone_loaded(
    detector: nn.Module, reference: dict[str, torch.Tensor], model: str
) -> int:
    """Assert that every tensor of the encoder's state dict `reference` sits, equal, at its
    `detector_key` in the detector; returns how many were checked. Only BN step counters
    (`num_batches_tracked`, unused by FrozenBatchNorm2d, which has none) may be absent."""
    state = detector.state_dict()
    checked, missing, differ = 0, [], []
    for key, value in reference.items():
        target = detector_key(model, key)
        if target not in state:
            if not key.endswith("num_batches_tracked"):
                missing.append(target)
            continue
        if not _same_values(state[target].detach().cpu(), value.detach().cpu()):
            differ.append(target)
        checked += 1
    if missing or differ:
        raise RuntimeError(
            f"backbone not fully loaded into the {model} detector: missing {missing[:10]}, "
            f"different {differ[:10]}"
        )
    return checked


def _same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equal values, NaN equal to NaN (a loaded NaN is loaded, not different)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if not a.is_floating_point():
        return torch.equal(a, b)
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))
