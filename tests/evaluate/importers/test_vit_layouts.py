"""DINO's ViT files through the importers and --ckpt, written exactly as DINO saves them: the
released backbone (dino_deitsmall16_pretrain.pth: a bare state dict with vision_transformer.py's
names) and main_dino.py's training checkpoint ({student: module.backbone.* + module.head.*,
teacher: backbone.* + head.*, optimizer, epoch, args: Namespace, dino_loss, fp16_scaler})."""

import argparse

import torch

from evaluate.features import load_encoder
from evaluate.importers import load_foreign
from pretrain.backbones import build_backbone
from tests.evaluate.importers.writers import mlp_state, prefixed
from tests.pretrain.test_vit import dino_vits16_keys

IMAGES = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def released_vits16(seed: int) -> dict[str, torch.Tensor]:
    """A state dict in the layout of dino_deitsmall16_pretrain.pth, random values."""
    generator = torch.Generator().manual_seed(seed)
    return {k: 0.02 * torch.randn(s, generator=generator) for k, s in dino_vits16_keys().items()}


def tiny_vit(seed: int, **options) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_backbone("vit_tiny_test", **options)[0].eval()


def dino_head(prefix: str, dim: int) -> dict[str, torch.Tensor]:
    """DINOHead's parameters (3-layer MLP, weight-normed last layer) under `prefix`."""
    head = mlp_state(f"{prefix}mlp.", [dim, 64, 64, 16], batchnorm=False)
    head[f"{prefix}last_layer.weight_g"] = torch.ones(128, 1)
    head[f"{prefix}last_layer.weight_v"] = torch.randn(128, 16)
    return head


def test_dino_released_vits16_loads_through_ckpt(tmp_path):
    path = tmp_path / "dino_deitsmall16_pretrain.pth"
    released = released_vits16(seed=1)
    torch.save(released, path)
    encoder, metadata = load_encoder(str(path))
    assert metadata["source_format"] == "vit" and metadata["arch"] == "vit_small_patch16"
    assert (metadata["cls_token"], metadata["final_norm"], metadata["patch_size"]) == (
        True,
        True,
        16,
    )
    # DINO eval_linear.py / eval_knn.py: Resize(256, interpolation=3) = bicubic, antialiased
    assert metadata["preprocessing"]["resize_interpolation"] == "bicubic"
    assert all(torch.equal(encoder.state_dict()[k], v) for k, v in released.items())
    assert encoder(torch.randn(1, 3, 224, 224)).shape == (1, 384)


def test_a_timm_vit_state_dict_drops_its_classifier_and_keeps_its_flags(tmp_path):
    model = tiny_vit(2, cls_token=False, final_norm=False)  # SelfPatch's ViT layout
    state = {**model.state_dict(), "head.weight": torch.zeros(10, 32), "head.bias": torch.zeros(10)}
    path = tmp_path / "selfpatch_like.pth"
    torch.save({"model": state}, path)
    state_dict, metadata = load_foreign(path)
    assert metadata["arch"] == "vit_tiny_test" and "head.weight" not in state_dict
    assert (metadata["cls_token"], metadata["final_norm"], metadata["patch_size"]) == (
        False,
        False,
        4,
    )
    encoder, _ = load_encoder(str(path))
    with torch.no_grad():
        torch.testing.assert_close(encoder(IMAGES), model(IMAGES), rtol=0, atol=0)


def test_dino_training_checkpoint_of_a_vit_gives_the_teacher(tmp_path):
    student, teacher = tiny_vit(3, drop_path_rate=0.1), tiny_vit(4)
    blob = {
        "student": {
            **prefixed(student.state_dict(), "module.backbone."),
            **prefixed(dino_head("head.", 32), "module."),
        },
        "teacher": {**prefixed(teacher.state_dict(), "backbone."), **dino_head("head.", 32)},
        "optimizer": {"state": {}, "param_groups": [{"lr": 5e-4, "weight_decay": 0.04}]},
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_small", patch_size=16, out_dim=65536),
        "dino_loss": {"center": torch.zeros(1, 65536)},
        "fp16_scaler": {"scale": 65536.0, "growth_factor": 2.0},
    }
    path = tmp_path / "checkpoint.pth"
    torch.save(blob, path)
    encoder, metadata = load_encoder(str(path))
    assert (metadata["source_format"], metadata["network"], metadata["method"]) == (
        "dino",
        "target",
        "dino",
    )
    assert metadata["arch"] == "vit_tiny_test" and metadata["pretrain_epochs"] == 100
    with torch.no_grad():
        torch.testing.assert_close(encoder(IMAGES), teacher(IMAGES), rtol=0, atol=0)
        state_dict, metadata = load_foreign(path, network="online")
        assert metadata["network"] == "online"
        assert all(torch.equal(state_dict[k], v) for k, v in student.state_dict().items())
