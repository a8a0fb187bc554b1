"""Which network each pretraining method trains, and what its forward needs at each step.

    byol        BYOL (pretrain/byol.py): two views, online/target networks, LARS on ResNets or
                AdamW on ViTs (byol_vits16_in1k)
    byol-patch  ours (pretrain/byol_patch.py): BYOL plus a per-patch term on ViTs; never recorded
                as SelfPatch
    dino        DINO (pretrain/dino.py; Caron et al. 2021): multi-crop, student/teacher heads
    selfpatch   SelfPatch (pretrain/selfpatch.py; Yun et al. 2022): DINO plus the patch objective

Every network has the same face (online_encoder, feature_dim, online_modules, target_modules,
last_layer_parameters, forward(*inputs, **step_arguments) -> (loss, detached features)), so
pretrain/train.py drives any of them. The teacher/target is a frozen copy of the student without
stochastic depth (pretrain/ema.py frozen_copy; DINO main_dino.py builds its teacher without
drop-path).
"""

from torch import nn

from pretrain.backbones import build_backbone
from pretrain.config import PretrainConfig
from pretrain.ema import frozen_copy

MULTICROP_METHODS = ("dino", "selfpatch")  # trained on multi-crop views (pretrain/multicrop.py)
DISPLAY_NAMES = {  # how logs and errors name each method
    "byol": "BYOL",
    "byol-patch": "byol-patch",
    "dino": "DINO",
    "selfpatch": "SelfPatch",
}


def exported_encoder(method: str) -> str:
    """Which encoder a run exports (and a training checkpoint is read as): BYOL's online network
    (BYOL v3 evaluates it), DINO's and SelfPatch's teacher (the authors' released weights and
    evaluation scripts use the teacher: dino eval_linear.py checkpoint_key "teacher", SelfPatch's
    vit2mmseg.py)."""
    return "target_encoder" if method in MULTICROP_METHODS else "online_encoder"


def encoder_options(config: PretrainConfig) -> dict:
    """build_backbone's ViT keywords from the config (none for ResNets)."""
    if not config.backbone.startswith("vit_"):
        return {}
    return {
        "drop_path_rate": config.drop_path_rate,
        "cls_token": config.cls_token,
        "final_norm": config.final_norm,
    }


def build_network(config: PretrainConfig) -> nn.Module:
    """The method's student/teacher (online/target) network, initialised from torch's RNG."""
    if config.method == "byol":
        from pretrain.byol import BYOL

        return BYOL(
            config.backbone,
            cifar_stem=config.cifar_stem,
            projector_hidden_dim=config.projector_hidden_dim,
            projection_dim=config.projection_dim,
            predictor_hidden_dim=config.predictor_hidden_dim,
            encoder_options=encoder_options(config),
        )
    student, _ = build_backbone(config.backbone, **encoder_options(config))
    if config.method == "byol-patch":
        from pretrain.byol_patch import BYOLPatch

        return BYOLPatch(
            student,
            frozen_copy(student),
            projector_hidden_dim=config.projector_hidden_dim,
            projection_dim=config.projection_dim,
            predictor_hidden_dim=config.predictor_hidden_dim,
            patch_loss_weight=config.patch_loss_weight,
            topk=config.patch_topk,
            wrap=config.patch_wrap,
        )
    heads = {
        "out_dim": config.head_out_dim,
        "hidden_dim": config.head_hidden_dim,
        "bottleneck_dim": config.head_bottleneck_dim,
        "norm_last_layer": config.norm_last_layer,
        "student_temp": config.student_temp,
        "center_momentum": config.center_momentum,
    }
    if config.method == "dino":
        from pretrain.dino import DINO

        return DINO(student, frozen_copy(student), **heads)
    from pretrain.selfpatch import SelfPatch

    return SelfPatch(
        student,
        frozen_copy(student),
        **heads,
        patch_out_dim=config.patch_head_out_dim,
        patch_loss_weight=config.patch_loss_weight,
        topk=config.patch_topk,
        wrap=config.patch_wrap,
    )


def step_arguments(config: PretrainConfig, schedule, step: int) -> dict:
    """The keywords of the network's forward at `step`: DINO/SelfPatch's teacher temperature."""
    if config.method in MULTICROP_METHODS:
        return {"teacher_temp": schedule.teacher_temp(step)}
    return {}
