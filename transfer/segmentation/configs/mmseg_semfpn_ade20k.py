# mmsegmentation 1.x config: protocol ade20k-semfpn-80k/1 on a byol-bench backbone: semantic FPN
# (Kirillov et al. 2019) on ADE20K, as mmseg 0.x configs/sem_fpn/fpn_r50_512x512_80k_ade20k.py with
# its _base_ files (models/fpn_r50.py, datasets/ade20k.py, schedules/schedule_80k.py), except that
# the backbone is a plain ResNet holding our weights. `python -m transfer.export mmseg --ckpt ...
# --protocol ade20k-semfpn-80k/1` writes a copy with the BYOL-BENCH block filled in. Settings
# match transfer/segmentation/protocols.py:ade20k_semfpn_80k, the built-in engine's preset.
# BYOL-BENCH BEGIN
checkpoint_file = "backbone-mmseg.pth"  # tensor-only: {"state_dict": ..., "meta": ...}
depth = 50  # mmseg ResNet depth (18, 34, 50, 101, 152)
stage_channels = [256, 512, 1024, 2048]
num_classes = 150
mean = [123.675, 116.28, 103.53]  # the backbone's pretraining normalisation, 0..255 scale
std = [58.395, 57.12, 57.375]
data_root = "data/ade/ADEChallengeData2016"
lr = 0.01
seed = 0
iterations = 80000
samples_per_gpu = 4  # batch 16 in total: 4 GPUs x 4
crop = 512
base_size = (2048, 512)  # keep-ratio (long, short) resize target; scales with the crop
norm_type = "SyncBN"  # "BN" on one device or on CPU
work_dir = "work_dirs/ade20k-semfpn-80k-v1"
# BYOL-BENCH END

protocol = "ade20k-semfpn-80k/1"
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
    backbone=dict(  # plain ResNet (our key names), not mmseg's ResNetV1c deep stem
        type="ResNet",
        depth=depth,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        strides=(1, 2, 2, 2),
        dilations=(1, 1, 1, 1),
        style="pytorch",
        norm_cfg=norm_cfg,
        norm_eval=False,
        init_cfg=dict(type="Pretrained", checkpoint=checkpoint_file),
    ),
    neck=dict(type="FPN", in_channels=stage_channels, out_channels=256, num_outs=4),
    decode_head=dict(
        type="FPNHead",
        in_channels=[256, 256, 256, 256],
        in_index=[0, 1, 2, 3],
        feature_strides=[4, 8, 16, 32],
        channels=128,
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
    ),
    train_cfg=dict(),
    test_cfg=dict(mode="whole"),
)

dataset_type = "ADE20KDataset"
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", reduce_zero_label=True),
    dict(type="RandomResize", scale=base_size, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type="RandomCrop", crop_size=crop_size, cat_max_ratio=0.75),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PhotoMetricDistortion"),
    dict(type="PackSegInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=base_size, keep_ratio=True),
    dict(type="LoadAnnotations", reduce_zero_label=True),
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
        data_prefix=dict(img_path="images/training", seg_map_path="annotations/training"),
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
        data_prefix=dict(img_path="images/validation", seg_map_path="annotations/validation"),
        pipeline=test_pipeline,
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(type="IoUMetric", iou_metrics=["mIoU"])
test_evaluator = val_evaluator

# SGD lr 0.01, momentum 0.9, weight decay 5e-4, none on norm layers; poly 0.9 to 1e-4.
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="SGD", lr=lr, momentum=0.9, weight_decay=5e-4),
    paramwise_cfg=dict(norm_decay_mult=0.0),
    clip_grad=None,
)
param_scheduler = [
    dict(type="PolyLR", eta_min=1e-4, power=0.9, begin=0, end=iterations, by_epoch=False)
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
