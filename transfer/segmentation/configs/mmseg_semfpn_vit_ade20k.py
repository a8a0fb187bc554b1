# mmsegmentation 1.x config: protocol selfpatch-ade20k-semfpn-vit-40k/1 on a byol-bench ViT:
# SelfPatch's ADE20K semantic FPN (alinlab/SelfPatch segmentation/configs/
# semfpn_vit-s16_512x512_40k_ade20k.py, mmseg 0.x, with its _base_ files) in mmseg 1.x form, the
# authors' SelfPatch_ViT computed by mmseg's VisionTransformer (with_cls_token=False, no final
# norm). `python -m transfer.export mmseg --ckpt ... --protocol selfpatch-ade20k-semfpn-vit-40k/1`
# writes a copy with the BYOL-BENCH block filled in. Settings match
# transfer/segmentation/protocols.py:selfpatch_ade20k_semfpn_vit_40k.
# BYOL-BENCH BEGIN
checkpoint_file = "backbone-mmseg.pth"  # tensor-only: {"state_dict": ..., "meta": ...}
patch_size = 16
embed_dims = 384  # ViT-S/16
num_layers = 12
num_heads = 6
out_indices = [2, 5, 8, 11]  # 0-based blocks whose raw outputs feed the head
drop_path_rate = 0.1
img_size = 512  # pos_embed is resized to this grid at load, then to each input's
num_classes = 150
mean = [123.675, 116.28, 103.53]  # the backbone's pretraining normalisation, 0..255 scale
std = [58.395, 57.12, 57.375]
data_root = "data/ade/ADEChallengeData2016"
lr = 6e-05
seed = 0
iterations = 40000
warmup_iters = 1500
samples_per_gpu = 4  # batch 16 in total
crop = 512
base_size = (2048, 512)  # keep-ratio (long, short) resize target; scales with the crop
norm_type = "SyncBN"  # "BN" on one device or on CPU
work_dir = "work_dirs/selfpatch-ade20k-semfpn-vit-40k-v1"
# BYOL-BENCH END

protocol = "selfpatch-ade20k-semfpn-vit-40k/1"
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
    backbone=dict(  # mmseg's ViT computing SelfPatch_ViT (segmentation/backbones/vit_SelfPatch.py)
        type="VisionTransformer",
        img_size=(img_size, img_size),
        patch_size=patch_size,
        in_channels=3,
        embed_dims=embed_dims,
        num_layers=num_layers,
        num_heads=num_heads,
        mlp_ratio=4,
        out_indices=out_indices,
        qkv_bias=True,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=drop_path_rate,
        with_cls_token=False,  # SelfPatch_ViT has no [CLS]; mmseg's drops it before the blocks
        output_cls_token=False,
        norm_cfg=dict(type="LN", eps=1e-6),
        act_cfg=dict(type="GELU"),
        patch_norm=False,
        patch_bias=True,  # mmseg 1.x defaults to False (0.x and our ViT have the bias)
        patch_pad="corner",  # zero padding at the bottom/right to a multiple of the patch
        final_norm=False,  # raw block outputs
        interpolate_mode="bicubic",
        norm_eval=False,
        init_cfg=dict(type="Pretrained", checkpoint=checkpoint_file),
    ),
    neck=dict(type="FPN", in_channels=[embed_dims] * 4, out_channels=256, num_outs=4),
    decode_head=dict(
        type="FPNHead",
        in_channels=[256, 256, 256, 256],
        in_index=[0, 1, 2, 3],
        feature_strides=[4, 8, 16, 32],  # nominal: every input is at the patch stride
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

# AdamW lr 6e-5, betas (0.9, 0.999), weight decay 0.01; the authors' custom_keys (which match
# pos_embed and cls_token only: mmseg's norm layers are named ln1/ln2/bn); poly power 1.0 to 0
# times mmcv's linear warm-up from 1e-6 over warmup_iters (both schedulers from 0: mmengine
# chains them multiplicatively, as mmcv's warm-up scales the poly LR). mmengine schedulers reach
# their end value at step end - 1 (total_iters = end - begin - 1), mmcv's at warmup_iters and
# max_iters: hence the + 1, which makes every step's LR mmcv's (tested).
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=lr, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            "pos_embed": dict(decay_mult=0.0),
            "cls_token": dict(decay_mult=0.0),
            "norm": dict(decay_mult=0.0),
        }
    ),
    clip_grad=None,
)
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=warmup_iters + 1),
    dict(type="PolyLR", eta_min=0.0, power=1.0, begin=0, end=iterations + 1, by_epoch=False),
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
