# mmsegmentation 1.x config: protocol byol-paper-fcn/1 (BYOL v3, App. D.4, after MoCo App. A.3)
# on a byol-bench backbone: FCN on a dilated ResNet, VOC2012 train_aug -> val mIoU.
# `python -m transfer.export mmseg --ckpt ...` writes a copy with the block between the BYOL-BENCH
# markers filled in; the rest is the same for every backbone. Settings match
# transfer/segmentation/protocols.py:voc12aug_fcn, the built-in engine's preset, except where noted.
# BYOL-BENCH BEGIN
checkpoint_file = "backbone-mmseg.pth"  # tensor-only: {"state_dict": ..., "meta": ...}
depth = 50  # mmseg ResNet depth (18, 34, 50, 101, 152)
feature_dim = 2048
num_classes = 21
mean = [123.675, 116.28, 103.53]  # the backbone's pretraining normalisation, 0..255 scale
std = [58.395, 57.12, 57.375]
data_root = "data/VOCdevkit/VOC2012"
train_ann_file = "ImageSets/Segmentation/train_aug.txt"  # 10,582 ids (mmseg's aug.txt works too)
train_seg_dir = "SegmentationClassAug"
val_ann_file = "ImageSets/Segmentation/val.txt"
val_seg_dir = "SegmentationClass"
lr = 0.01  # one of the protocol's candidates 1e-3 ... 1e-1, chosen on 2,119 held-out images
seed = 0
iterations = 30000
samples_per_gpu = 2  # batch 16 in total: 8 GPUs x 2
crop = 513
norm_type = "SyncBN"  # "BN" on one device or on CPU
work_dir = "work_dirs/byol-paper-fcn-v1"
# BYOL-BENCH END

protocol = "byol-paper-fcn/1"
default_scope = "mmseg"
crop_size = (crop, crop)
norm_cfg = dict(type=norm_type, requires_grad=True)
data_preprocessor = dict(
    type="SegDataPreProcessor",
    mean=mean,
    std=std,
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size,
)
model = dict(
    type="EncoderDecoder",
    data_preprocessor=data_preprocessor,
    # Plain ResNet (torchvision v1.5 layout, our key names), not ResNetV1c (deep stem): conv5 with
    # stride 1 and dilation 2 on every 3x3 conv (contract_dilation=False), output stride 16.
    backbone=dict(
        type="ResNet",
        depth=depth,
        num_stages=4,
        out_indices=(3,),
        strides=(1, 2, 2, 1),
        dilations=(1, 1, 1, 2),
        contract_dilation=False,
        style="pytorch",
        norm_cfg=norm_cfg,
        norm_eval=False,
        init_cfg=dict(type="Pretrained", checkpoint=checkpoint_file),
    ),
    # Two 3x3 convs of 256 channels, dilation 6, BN, ReLU; 1x1 classifier; no dropout (none in
    # the paper; mmseg's default is 0.1).
    decode_head=dict(
        type="FCNHead",
        in_channels=feature_dim,
        in_index=0,
        channels=256,
        num_convs=2,
        kernel_size=3,
        dilation=6,
        concat_input=False,
        dropout_ratio=0.0,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
    ),
    train_cfg=dict(),
    test_cfg=dict(mode="whole"),
)

dataset_type = "PascalVOCDataset"
# DEVIATION(mmcv-rescale): mmcv's RandomResize draws its [0.5, 2.0] factor of a fixed (512, 512)
# keep-ratio box, not of the image's own size; VOC images are at most 500 px, so this is the
# image's size x 1.02-1.37 (the built-in engine rescales the image's own size).
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations"),
    dict(type="RandomResize", scale=(512, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type="RandomCrop", crop_size=crop_size),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PackSegInputs"),
]
test_pipeline = [  # the whole image (BYOL's centre 513 crop of VOC's <= 500 px images)
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations"),
    dict(type="PackSegInputs"),
]
train_dataloader = dict(
    batch_size=samples_per_gpu,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path="JPEGImages", seg_map_path=train_seg_dir),
        ann_file=train_ann_file,
        pipeline=train_pipeline,
    ),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path="JPEGImages", seg_map_path=val_seg_dir),
        ann_file=val_ann_file,
        pipeline=test_pipeline,
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(type="IoUMetric", iou_metrics=["mIoU"])
test_evaluator = val_evaluator

# SGD momentum 0.9, weight decay 1e-4; LR x0.1 at 70% and 90% of training (BYOL v3, App. D.4).
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="SGD", lr=lr, momentum=0.9, weight_decay=1e-4),
    clip_grad=None,
)
param_scheduler = [
    dict(
        type="MultiStepLR",
        by_epoch=False,
        begin=0,
        end=iterations,
        milestones=[int(0.7 * iterations), int(0.9 * iterations)],
        gamma=0.1,
    )
]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=iterations, val_interval=iterations)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=1000, max_keep_ckpts=2),
    sampler_seed=dict(type="DistSamplerSeedHook"),
)
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
    dist_cfg=dict(backend="nccl"),
)
log_processor = dict(by_epoch=False)
log_level = "INFO"
load_from = None
resume = True  # a work_dir with a checkpoint resumes from it
randomness = dict(seed=seed)
