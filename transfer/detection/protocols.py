"""Detection protocols as named, versioned presets; each docstring states every setting and its
source. The name goes into every record's `task.protocol`; tables never mix two names in a column.

    byol-paper-frcnn-c4/1     BYOL v3 App. D.5: VOC07 trainval -> VOC07 test, AP50 (Table 4)
    moco-detectron2-c4-24k/1  MoCo's detectron2 VOC07+12 R50-C4 24k (what most frameworks report)
    coco-maskrcnn-fpn-1x/1    detectron2's Mask R-CNN R50-FPN 1x on COCO (box and mask AP)
    selfpatch-coco-maskrcnn-vit-1x/1  SelfPatch's Mask R-CNN with a ViT pyramid, 1x on COCO

docs/protocols.md warns that the first two differ by several AP50 points for every method: they
are different protocols, never one column.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from pretrain.schedule import step_decay
from results.published import DETECTION_PROTOCOL
from transfer.vit_param_groups import SELFPATCH_NO_DECAY_KEYS

PAPER_PROTOCOL = DETECTION_PROTOCOL  # "byol-paper-frcnn-c4/1"
MOCO_PROTOCOL = "moco-detectron2-c4-24k/1"
COCO_PROTOCOL = "coco-maskrcnn-fpn-1x/1"
VIT_PROTOCOL = "selfpatch-coco-maskrcnn-vit-1x/1"
SIZES_480_800 = tuple(range(480, 801, 32))  # detectron2 MIN_SIZE_TRAIN of the MoCo VOC configs


# fields added with the ViT protocol: left out of a run's identity at their defaults
# (pretrain/identity.py:settings_identity), so a ResNet run directory made before them resumes
ADDED_FIELDS = (
    "backbone",
    "optimizer",
    "betas",
    "no_decay_keys",
    "epochs",
    "lr_step_epochs",
    "amp",
    "roi_sampling_ratio",
    "num_heads",
    "drop_path",
    "blocks",
)


@dataclass(frozen=True)
class Protocol:
    """Every setting of one detection protocol (data, model, schedule, resizing, metrics)."""

    name: str  # "<name>/<version>", recorded as task.protocol
    dataset: str  # record task.dataset: "voc07" or "coco"
    split: str  # record task.split: the evaluated split
    train_sets: tuple[str, ...]  # "2007-trainval", "2012-trainval" (VOC) or "train2017" (COCO)
    test_set: str  # "2007-test" (VOC) or "val2017" (COCO)
    model: str  # transfer/detection/models.py MODELS
    norm: str  # transfer/detection/models.py NORMS
    freeze_at: int  # detectron2 BACKBONE.FREEZE_AT
    resize: str  # "shortest-edge" | "longest-edge"
    train_sizes: tuple[int, ...]
    test_size: int
    max_size: int  # shortest-edge only
    batch_size: int  # images per iteration (all GPUs together)
    base_lr: float
    lr_steps: tuple[int, ...]  # iterations where the LR drops x0.1
    max_iters: int
    warmup_iters: int  # linear warmup from warmup_factor x base_lr (detectron2 WarmupMultiStepLR)
    warmup_factor: float = 0.001  # detectron2 SOLVER.WARMUP_FACTOR
    momentum: float = 0.9  # detectron2 SOLVER.MOMENTUM
    weight_decay: float = 1e-4  # detectron2 SOLVER.WEIGHT_DECAY (norm parameters: 0, below)
    weight_decay_norm: float = 0.0  # detectron2 SOLVER.WEIGHT_DECAY_NORM
    rpn_pre_nms_train: int = 12000  # detectron2 RPN.PRE_NMS_TOPK_TRAIN (C4 default)
    rpn_pre_nms_test: int = 6000  # detectron2 RPN.PRE_NMS_TOPK_TEST (C4 default)
    rpn_post_nms_train: int = 2000  # detectron2 RPN.POST_NMS_TOPK_TRAIN
    rpn_post_nms_test: int = 1000  # detectron2 RPN.POST_NMS_TOPK_TEST
    roi_batch_per_image: int = 512  # detectron2 ROI_HEADS.BATCH_SIZE_PER_IMAGE
    detections_per_image: int = 100  # detectron2 TEST.DETECTIONS_PER_IMAGE
    flip: bool = True  # horizontal flip p 0.5 (detectron2 RandomFlip default)
    use_07_metric: bool = True  # VOC: the 11-point AP (detectron2 does so for VOC2007 test)
    precise_bn_iters: int = 0  # >0: detectron2 TEST.PRECISE_BN over this many batches (trained BN)
    backbone: str = "resnet"  # the family it takes (pretrain/backbones.py BACKBONE_FAMILIES)
    optimizer: str = "sgd"  # "sgd" (momentum; norm parameters: weight_decay_norm) or "adamw"
    betas: tuple[float, float] = (0.9, 0.999)  # adamw only
    no_decay_keys: tuple[str, ...] = ()  # adamw: name substrings with weight decay 0 (mmcv)
    epochs: int = 0  # >0: max_iters and lr_steps follow from epochs (in_iterations)
    lr_step_epochs: tuple[int, ...] = ()  # epochs where the LR drops x0.1 (epochs > 0)
    amp: bool = False  # fp16 autocast + loss scaling on CUDA
    roi_sampling_ratio: int = 2  # RoIAlign sampling points (torchvision default; mmdet/d2: 0)
    num_heads: int | None = None  # ViT: attention heads of the fine-tuned ViT (None: its own)
    drop_path: float = 0.0  # ViT: stochastic depth rate of the fine-tuned ViT
    blocks: tuple[int, ...] = (3, 5, 7, 11)  # ViT: the blocks of the pyramid (0-based)

    def lr(self, iteration: int) -> float:
        """detectron2's WarmupMultiStepLR: linear warmup, then x0.1 at each of `lr_steps`."""
        return step_decay(
            iteration,
            self.max_iters,
            self.base_lr,
            milestones=self.lr_steps,
            warmup_steps=self.warmup_iters,
            warmup_factor=self.warmup_factor,
        )


def byol_paper_frcnn_c4() -> Protocol:
    """`byol-paper-frcnn-c4/1`: the BYOL paper's detection transfer (Grill et al. 2020, BYOL v3,
    App. D.5 and Table 4: 77.5 AP50).

    Stated by the paper: Faster R-CNN R50-C4 (conv5 as the box head), fine-tuned on VOC2007
    trainval, AP50 on VOC2007 test; multi-scale training with the longest edge in 480-1024; LR
    1e-3, x0.1 at 1M steps and again at 1.2M, 1.5M steps in all. Not stated, chosen here: batch 1
    image per step, 11 sizes are not given so the long side is drawn from 480..1024 in steps of 32,
    test long side 1024, frozen BN with stem + res2 frozen (detectron2's defaults), no warmup,
    SGD momentum 0.9, weight decay 1e-4, horizontal flips, RPN/RoI settings of detectron2's C4,
    the VOC2007 11-point AP (AP = mean over IoU 0.5:0.95, AP75 also recorded).
    """
    # DEVIATION(async-sgd): the paper trains with asynchronous SGD; we use synchronous SGD.
    return Protocol(
        name=PAPER_PROTOCOL,
        dataset="voc07",
        split="test",
        train_sets=("2007-trainval",),
        test_set="2007-test",
        model="c4",
        norm="frozen-bn",
        freeze_at=2,
        resize="longest-edge",
        train_sizes=tuple(range(480, 1025, 32)),
        test_size=1024,
        max_size=1024,
        batch_size=1,
        base_lr=1e-3,
        lr_steps=(1_000_000, 1_200_000),
        max_iters=1_500_000,
        warmup_iters=0,
    )


def moco_detectron2_c4_24k() -> Protocol:
    """`moco-detectron2-c4-24k/1`: MoCo's VOC protocol (He et al. 2020, MoCo, Sec. 4.2; configs
    moco/detection/configs/pascal_voc_R_50_C4_24k_moco.yaml and Base-RCNN-C4-BN.yaml on
    detectron2's defaults).

    Faster R-CNN R50-C4 with SyncBN in the backbone and an extra SyncBN after res5
    (Res5ROIHeadsExtraNorm), FREEZE_AT 0 (every layer fine-tuned); VOC2007 trainval + VOC2012
    trainval -> VOC2007 test; 24k iterations, batch 16, base LR 0.02, x0.1 at 18k and 22k, linear
    warmup over 100 iterations from 0.001x; SGD momentum 0.9, weight decay 1e-4 (none on norm
    parameters); short side drawn from (480, 512, ..., 800), long side <= 1333, test short side
    800; RPN pre/post-NMS top-k 12000/2000 train, 6000/1000 test; 512 RoIs per image; flips;
    ImageNet RGB mean/std; before testing, BN statistics re-estimated over 200 training batches
    (TEST.PRECISE_BN, detectron2's NUM_ITER 200). Metrics: detectron2's
    PascalVOCDetectionEvaluator on VOC2007 test (11-point AP): AP50, AP75, AP (mean over IoU
    0.5:0.95).
    """
    # DEVIATION(single-run): MoCo reports the mean of 5 runs; one record is one run (its seed);
    # `--seeds 0 1 2 3 4` runs five, and the tables show their mean ± std (results/frame.py).
    return Protocol(
        name=MOCO_PROTOCOL,
        dataset="voc07",
        split="test",
        train_sets=("2007-trainval", "2012-trainval"),
        test_set="2007-test",
        model="c4",
        norm="syncbn",
        freeze_at=0,
        resize="shortest-edge",
        train_sizes=SIZES_480_800,
        test_size=800,
        max_size=1333,
        batch_size=16,
        base_lr=0.02,
        lr_steps=(18_000, 22_000),
        max_iters=24_000,
        warmup_iters=100,
        precise_bn_iters=200,
    )


def coco_maskrcnn_fpn_1x() -> Protocol:
    """`coco-maskrcnn-fpn-1x/1`: detectron2's Mask R-CNN R50-FPN 1x schedule
    (detectron2 configs COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml, Base-RCNN-FPN.yaml).

    COCO train2017 -> val2017; 90k iterations, batch 16, base LR 0.02, x0.1 at 60k and 80k, linear
    warmup over 1000 iterations from 0.001x; SGD momentum 0.9, weight decay 1e-4 (none on norm
    parameters); short side drawn from (640, 672, ..., 800), long side <= 1333, test 800; frozen BN
    with stem + res2 frozen; FPN without norm, 2fc box head, 4-conv mask head; RPN per-level
    pre-NMS top-k 2000 train / 1000 test, post-NMS 1000; 512 RoIs per image; flips. Metrics
    (pycocotools COCOeval): box AP, AP50, AP75 and mask AP, AP50, AP75.
    """
    return Protocol(
        name=COCO_PROTOCOL,
        dataset="coco",
        split="val2017",
        train_sets=("train2017",),
        test_set="val2017",
        model="mask-fpn",
        norm="frozen-bn",
        freeze_at=2,
        resize="shortest-edge",
        train_sizes=tuple(range(640, 801, 32)),
        test_size=800,
        max_size=1333,
        batch_size=16,
        base_lr=0.02,
        lr_steps=(60_000, 80_000),
        max_iters=90_000,
        warmup_iters=1000,
        rpn_pre_nms_train=2000,
        rpn_pre_nms_test=1000,
        rpn_post_nms_train=1000,
        rpn_post_nms_test=1000,
    )


def selfpatch_coco_maskrcnn_vit_1x() -> Protocol:
    """`selfpatch-coco-maskrcnn-vit-1x/1`: SelfPatch's COCO Mask R-CNN with a ViT (Yun et al.
    2022, Table 2: ViT-S/16 DINO 40.8 / 37.3, SelfPatch 42.1 / 38.5 box / mask AP); config
    alinlab/SelfPatch detection/configs/selfpatch/mask_rcnn_vit_small_12_p16_1x_coco.py on
    _base_/models/mask_rcnn_selfpatch_p16.py, coco_instance.py, schedule_1x.py (mmdet 2.x;
    "hyperparameters modified from Swin-Transformer-Object-Detection").

    Backbone: the ViT with num_heads 8 (the published config's value on ViT-S/16 weights trained
    with 6; --num-heads changes it, recorded), drop_path_rate 0.05, blocks [3, 5, 7, 11] -> the
    pyramid of vit_pyramid.py (strides 4, 8, 16, 32) -> FPN 256 ch, 5 levels (P6 by max pool);
    RPN anchors 32..512 (scale 8 x strides 4..64), ratios 0.5/1/2; RPN pre-NMS top-k 2000 train
    / 1000 test per level, 1000 proposals kept; 2fc box head 1024 (Shared2FCBBoxHead), 4-conv
    mask head; RoIAlign 7 (box) / 14 (mask), sampling_ratio 0, on strides 4..32; 512 RoIs per
    image; test: score 0.05, NMS 0.5, 100 detections, mask threshold 0.5.
    Training: COCO train2017 -> val2017; flip p 0.5, then the DETR/Sparse R-CNN augmentation
    (detr_augment.py: multi-scale short side 480..800 step 32, long side <= 1333, or short side
    400/500/600 -> random crop 384-600 -> multi-scale); test short side 800, long <= 1333;
    images padded to a multiple of 32. AdamW lr 1e-4/2 = 5e-5, betas (0.9, 0.999), weight decay
    0.05, decay multiplier 0 for names containing pos_embed, cls_token or norm (mmcv
    custom_keys); 12 epochs, x0.1 after epochs 8 and 11; linear warm-up over 1000 iterations
    (500*2) from 0.001x; fp16 (Swin-det's DistOptimizerHook use_fp16, apex); 1 image per GPU.
    Not stated, chosen here: 8 GPUs, so batch 8 (the config halves Swin-det's lr 1e-4 and
    doubles its 500 warm-up iterations, which Swin-det ran at 8 GPUs x 2 images: the linear
    scaling rule to 8 x 1). Metrics: pycocotools box AP, AP50, AP75 and mask AP, AP50, AP75.
    """
    # DEVIATION(box-loss): torchvision's RPN and box heads use smooth L1 (beta 1/9); the config
    # uses L1 loss for both.
    return Protocol(
        name=VIT_PROTOCOL,
        dataset="coco",
        split="val2017",
        train_sets=("train2017",),
        test_set="val2017",
        model="vit-mask-fpn",
        norm="frozen-bn",  # new layers without norm (mmdet FPN, Shared2FC, FCNMaskHead)
        freeze_at=0,  # SelfPatch_ViT freezes nothing
        resize="detr",
        train_sizes=tuple(range(480, 801, 32)),
        test_size=800,
        max_size=1333,
        batch_size=8,
        base_lr=1e-4 / 2,
        lr_steps=(),  # from lr_step_epochs
        max_iters=0,  # from epochs
        warmup_iters=1000,
        warmup_factor=0.001,
        weight_decay=0.05,
        rpn_pre_nms_train=2000,
        rpn_pre_nms_test=1000,
        rpn_post_nms_train=1000,
        rpn_post_nms_test=1000,
        backbone="vit",
        optimizer="adamw",
        betas=(0.9, 0.999),
        no_decay_keys=SELFPATCH_NO_DECAY_KEYS,
        epochs=12,
        lr_step_epochs=(8, 11),
        amp=True,
        roi_sampling_ratio=0,
        num_heads=8,
        drop_path=0.05,
        blocks=(3, 5, 7, 11),
    )


def in_iterations(protocol: Protocol, train_images: int) -> Protocol:
    """An epoch-based protocol with max_iters and lr_steps in iterations: an epoch is
    ceil(images / batch) iterations (mmdet's samplers pad the last batch); mmdet's step policy
    drops the LR at the start of each epoch of `lr_step_epochs`. Others: unchanged."""
    if protocol.epochs < 1:
        return protocol
    per_epoch = math.ceil(train_images / protocol.batch_size)
    return dataclasses.replace(
        protocol,
        max_iters=protocol.epochs * per_epoch,
        lr_steps=tuple(epoch * per_epoch for epoch in protocol.lr_step_epochs),
    )


PROTOCOLS = {
    PAPER_PROTOCOL: byol_paper_frcnn_c4,
    MOCO_PROTOCOL: moco_detectron2_c4_24k,
    COCO_PROTOCOL: coco_maskrcnn_fpn_1x,
    VIT_PROTOCOL: selfpatch_coco_maskrcnn_vit_1x,
}


def other_family(protocol: Protocol) -> str:
    """The end of the refusal sentence for the other backbone family: the protocols to use."""
    if protocol.backbone == "vit":
        resnet = [name for name, preset in PROTOCOLS.items() if preset().backbone == "resnet"]
        return f"for a ResNet use --protocol {', '.join(resnet[:-1])} or {resnet[-1]}"
    return f"for a ViT use --protocol {VIT_PROTOCOL} (COCO Mask R-CNN with a ViT pyramid)"
