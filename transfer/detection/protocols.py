"""Detection protocols as named, versioned presets; each docstring states every setting and its
source. The name goes into every record's `task.protocol`; tables never mix two names in a column.

    byol-paper-frcnn-c4/1     BYOL v3 App. D.5: VOC07 trainval -> VOC07 test, AP50 (Table 4)
    moco-detectron2-c4-24k/1  MoCo's detectron2 VOC07+12 R50-C4 24k (what most frameworks report)
    coco-maskrcnn-fpn-1x/1    detectron2's Mask R-CNN R50-FPN 1x on COCO (box and mask AP)

docs/protocols.md warns that the first two differ by several AP50 points for every method: they
are different protocols, never one column.
"""

from __future__ import annotations

from dataclasses import dataclass

from pretrain.schedule import step_decay
from results.published import DETECTION_PROTOCOL

PAPER_PROTOCOL = DETECTION_PROTOCOL  # "byol-paper-frcnn-c4/1"
MOCO_PROTOCOL = "moco-detectron2-c4-24k/1"
COCO_PROTOCOL = "coco-maskrcnn-fpn-1x/1"
SIZES_480_800 = tuple(range(480, 801, 32))  # detectron2 MIN_SIZE_TRAIN of the MoCo VOC configs


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


PROTOCOLS = {
    PAPER_PROTOCOL: byol_paper_frcnn_c4,
    MOCO_PROTOCOL: moco_detectron2_c4_24k,
    COCO_PROTOCOL: coco_maskrcnn_fpn_1x,
}
