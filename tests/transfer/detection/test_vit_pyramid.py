"""The ViT pyramid of SelfPatch's Mask R-CNN: strides and channels, the same features as the
authors' forward (raw block outputs, DINO's position-embedding interpolation), every export
tensor in the detector with the 8-head quirk, and AdamW's decay groups by the config's rule."""

import math

import pytest
import torch
import torch.nn.functional as F

from evaluate.features import load_encoder
from pretrain.vit import ViTEncoder
from tests.transfer.detection.vit_exports import make_vit_export
from transfer.detection import cli as detection
from transfer.detection import models as detection_models
from transfer.detection.optim import build_optimizer
from transfer.detection.protocols import selfpatch_coco_maskrcnn_vit_1x
from transfer.detection.vit_pyramid import ViTDetectionBody

BLOCKS = (3, 5, 7, 11)


def _patch16_vit() -> ViTEncoder:
    """A 12-block ViT with ViT-S/16's patch (16) and a 32-d width, pos_embed for 64 px,
    SelfPatch's layout (no [CLS], no final norm)."""
    torch.manual_seed(0)
    return ViTEncoder(
        patch_size=16,
        embed_dim=32,
        depth=12,
        num_heads=2,
        img_size=64,
        cls_token=False,
        final_norm=False,
    ).eval()


def _authors_forward(encoder: ViTEncoder, images: torch.Tensor, out_indices) -> list:
    """SelfPatch_ViT.forward_features (detection/backbone/vit_SelfPatch.py), written from its
    text: patch embedding + the pos_embed interpolated with scale (w0 + 0.1) / sqrt(N) bicubic,
    the blocks, and the chosen blocks' raw tokens reshaped to [B, D, H/p, W/p]."""
    batch, _, height, width = images.shape
    h0, w0 = height // 16, width // 16
    x = encoder.patch_embed.proj(images).flatten(2).transpose(1, 2)  # [B, N, D]
    pos = encoder.pos_embed  # [1, N0, D]
    side, dim = int(math.sqrt(pos.shape[1])), pos.shape[-1]
    pos = F.interpolate(
        pos.reshape(1, side, side, dim).permute(0, 3, 1, 2),
        scale_factor=((h0 + 0.1) / side, (w0 + 0.1) / side),
        mode="bicubic",
    )
    x = x + pos.permute(0, 2, 3, 1).reshape(1, -1, dim)
    outs = []
    for index, block in enumerate(encoder.blocks):
        x = block(x)
        if index in out_indices:
            outs.append(x.permute(0, 2, 1).reshape(batch, -1, h0, w0))
    return outs


def test_pyramid_strides_channels_and_the_authors_features():
    encoder = _patch16_vit()
    pyramid = ViTDetectionBody(encoder, BLOCKS).eval()
    images = torch.randn(2, 3, 64, 96)  # a 4 x 6 patch grid: pos_embed is interpolated
    levels = pyramid(images)
    assert pyramid.strides == (4, 8, 16, 32)
    assert [tuple(v.shape) for v in levels.values()] == [
        (2, 32, 64 // s, 96 // s) for s in (4, 8, 16, 32)
    ]
    with torch.no_grad():
        grids = _authors_forward(encoder, images, BLOCKS)
        assert torch.allclose(levels["2"], grids[2], atol=1e-5)  # fpn3: identity
        assert torch.allclose(levels["3"], F.max_pool2d(grids[3], 2, 2), atol=1e-5)
        assert torch.allclose(levels["1"], pyramid.fpn2(grids[1]), atol=1e-5)
        assert torch.allclose(levels["0"], pyramid.fpn1(grids[0]), atol=1e-5)
    kinds = [type(m).__name__ for m in pyramid.fpn1]  # deconv -> BN -> GELU -> deconv
    assert kinds == ["ConvTranspose2d", "BatchNorm2d", "GELU", "ConvTranspose2d"]
    assert pyramid.fpn1[0].kernel_size == (2, 2) and pyramid.fpn1[0].stride == (2, 2)
    fpn = detection_models.FpnBackbone(pyramid, [32] * 4, None).eval()
    outputs = fpn(images)
    assert list(outputs) == ["0", "1", "2", "3", "pool"]
    strides = [64 // v.shape[-2] for v in outputs.values()]
    assert strides == [4, 8, 16, 32, 64] and {v.shape[1] for v in outputs.values()} == {256}


@pytest.mark.parametrize("selfpatch", [True, False])
def test_every_export_tensor_lands_with_eight_heads(tmp_path, selfpatch):
    export = make_vit_export(tmp_path, selfpatch=selfpatch)
    original = torch.load(export, weights_only=True)["state_dict"]
    assert ("cls_token" in original) != selfpatch and ("norm.weight" in original) != selfpatch
    encoder, metadata = load_encoder(str(export))
    assert encoder.blocks[0].attn.num_heads == 2  # vit_tiny12_test's own
    protocol = selfpatch_coco_maskrcnn_vit_1x()
    detector, checked = detection.build_loaded_detector(encoder, metadata, protocol, 2)
    assert checked == len(original)  # every tensor, none skipped
    state = detector.state_dict()
    for key, value in original.items():
        assert torch.equal(state[f"backbone.body.encoder.{key}"], value), key
    vit = detector.backbone.body.encoder
    assert {block.attn.num_heads for block in vit.blocks} == {8}  # the published quirk
    assert vit.blocks[-1].drop_path1.drop_prob == pytest.approx(0.05)  # linear rule to 0.05
    assert vit.blocks[0].drop_path1.__class__.__name__ == "Identity"
    assert all(p.requires_grad for p in vit.parameters())  # fine-tuned, nothing frozen
    reference = {k: v.clone() for k, v in original.items()}
    reference["blocks.4.attn.qkv.weight"] += 1e-3
    with pytest.raises(RuntimeError, match="blocks.4.attn.qkv.weight"):
        detection_models.check_backbone_loaded(detector, reference, "vit-mask-fpn")


def test_eight_heads_split_attention_differently():
    """The quirk is not neutral: the same weights with 8 heads compute other features."""
    export_encoder = _patch16_vit()
    with torch.no_grad():  # trained-like peaked attention (random init attends near uniformly)
        for block in export_encoder.blocks:
            block.attn.qkv.weight.mul_(20)
    images = torch.randn(1, 3, 64, 64)
    eight = ViTEncoder(
        patch_size=16,
        embed_dim=32,
        depth=12,
        num_heads=8,
        img_size=64,
        cls_token=False,
        final_norm=False,
    ).eval()
    eight.load_state_dict(export_encoder.state_dict(), strict=True)
    with torch.no_grad():
        own = export_encoder.block_patch_tokens(images, [11])[0]
        quirk = eight.block_patch_tokens(images, [11])[0]
    assert own.shape == quirk.shape and not torch.allclose(own, quirk, atol=1e-3)


def test_adamw_groups_follow_the_config_custom_keys(tmp_path):
    """mmcv custom_keys {pos_embed, cls_token, norm: decay_mult 0} on the whole detector, matched
    as substrings of the parameter names; everything else (biases, the pyramid's BN, whose name
    fpn1.1 has no "norm", FPN, heads) keeps weight decay 0.05."""
    encoder, metadata = load_encoder(str(make_vit_export(tmp_path, selfpatch=False)))
    protocol = selfpatch_coco_maskrcnn_vit_1x()
    detector, _ = detection.build_loaded_detector(encoder, metadata, protocol, 2)
    optimizer = build_optimizer(detector, protocol)
    assert isinstance(optimizer, torch.optim.AdamW)
    decay_of = {
        id(p): (group["weight_decay"], group["lr"], group["betas"])
        for group in optimizer.param_groups
        for p in group["params"]
    }
    names = dict(detector.named_parameters())
    for name, parameter in names.items():
        exempt = any(key in name for key in ("pos_embed", "cls_token", "norm"))
        assert decay_of[id(parameter)] == (0.0 if exempt else 0.05, 5e-5, (0.9, 0.999)), name
    assert len(decay_of) == len(names)  # every parameter is optimised
    exempt_names = {n for n, p in names.items() if decay_of[id(p)][0] == 0.0}
    assert "backbone.body.encoder.pos_embed" in exempt_names
    assert "backbone.body.encoder.cls_token" in exempt_names
    assert "backbone.body.encoder.blocks.0.norm1.weight" in exempt_names
    assert "backbone.body.fpn1.1.weight" not in exempt_names
    assert "backbone.body.encoder.blocks.0.attn.qkv.bias" not in exempt_names


def test_the_model_kinds_refuse_the_other_encoder_family():
    from pretrain.backbones import build_backbone

    resnet, _ = build_backbone("resnet18")
    with pytest.raises(ValueError, match="vit-mask-fpn takes a ViT encoder, not ResNet"):
        detection_models.build_detector(resnet, detection_models.DetectorSpec("vit-mask-fpn", 2))
    with pytest.raises(ValueError, match="mask-fpn takes a ResNet encoder, not ViTEncoder"):
        detection_models.build_detector(
            _patch16_vit(), detection_models.DetectorSpec("mask-fpn", 2)
        )
