"""ViT segmenters (SelfPatch's ADE20K protocols) on vit_tiny12_test (patch 4, 32-d, 12 blocks):
the backbone computes what SelfPatch_ViT computes, every export tensor lands, the heads' strides
and channels, the schedule and optimizer, the CLI end to end, and the family refusals."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from evaluate.features import load_encoder
from pretrain.identity import settings_identity
from results.record import read_records
from tests.transfer.segmentation.layouts import make_ade20k, make_export, make_vit_export
from transfer.segmentation import cli as segmentation
from transfer.segmentation.data import build_segmentation_set
from transfer.segmentation.engine import Job, build_optimizer, evaluate, pixel_loss
from transfer.segmentation.metrics import mean_iou
from transfer.segmentation.models import backbone_keys_loaded, build_segmenter
from transfer.segmentation.protocols import (
    ADDED_FIELDS,
    ade20k_semfpn_80k,
    selfpatch_ade20k_semfpn_vit_40k,
    selfpatch_ade20k_upernet_vit_160k,
)

CROP = 48  # 12x12 patches; the export's pos_embed is 8x8 (32 px)
SEMFPN = replace(selfpatch_ade20k_semfpn_vit_40k(), crop=CROP)
UPERNET = replace(selfpatch_ade20k_upernet_vit_160k(), crop=CROP)


def _mmseg_resize(pos: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """mmseg resize_pos_embed on patch entries [1, N, D] (square), written out here."""
    side = int(pos.shape[1] ** 0.5)
    grid = pos.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    out = F.interpolate(grid, size=size, mode="bicubic", align_corners=False)
    return out.flatten(2).transpose(1, 2)


@pytest.mark.parametrize(("cls_token", "final_norm"), [(True, True), (False, False)])
def test_every_export_tensor_reaches_the_segmenter(tmp_path, cls_token, final_norm):
    export = make_vit_export(tmp_path, cls_token, final_norm)
    state = torch.load(export, weights_only=True)["state_dict"]
    assert len(state) == 2 + 1 + 12 * 12 + cls_token + 2 * final_norm  # patch, pos, blocks...
    for protocol in (SEMFPN, UPERNET):
        model = build_segmenter(protocol.head, load_encoder(str(export))[0], 150, protocol)
        backbone = {k[9:]: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
        unused = {"cls_token", "norm.weight", "norm.bias"} & set(state)  # SelfPatch_ViT: none
        assert set(backbone) == set(state) - unused and len(backbone) == 2 + 1 + 144
        same = {k: v for k, v in state.items() if k not in unused and k != "pos_embed"}
        assert backbone_keys_loaded(model, same) == len(same) == 146
        patch_pos = state["pos_embed"][:, int(cls_token) :]  # 8x8 entries
        assert torch.equal(backbone["pos_embed"], _mmseg_resize(patch_pos, (12, 12)))
        assert all(p.requires_grad for p in model.parameters())


def test_backbone_computes_selfpatch_vits_forward(tmp_path):
    """No [CLS] in the sequence, pos_embed resized 8x8 -> 12x12 at load and 12x12 -> the input's
    grid at forward, zero padding to the patch at the bottom/right, raw block outputs."""
    encoder = load_encoder(str(make_vit_export(tmp_path)))[0].eval()
    model = build_segmenter("semfpn", encoder, 150, SEMFPN).eval()
    images = torch.randn(2, 3, 41, 58)  # padded to 44 x 60: an 11 x 15 grid
    with torch.no_grad():
        x = encoder.patch_embed(F.pad(images, (0, 2, 0, 3)))  # [2, 11, 15, 32]
        pos = _mmseg_resize(_mmseg_resize(encoder.pos_embed[:, 1:], (12, 12)), (11, 15))
        x = x.reshape(2, 11 * 15, 32) + pos
        reference = []
        for block in encoder.blocks:
            x = block(x)
            reference.append(x.transpose(1, 2).reshape(2, 32, 11, 15))
        ours = model.features(model.backbone, images)
    assert [tuple(m.shape) for m in ours] == [(2, 32, 11, 15)] * 4  # stride = the patch
    for got, index in zip(ours, (2, 5, 8, 11)):
        torch.testing.assert_close(got, reference[index], atol=1e-5, rtol=1e-5)


def test_semantic_fpn_on_a_vit_follows_mmseg_fpnhead_nominal_strides():
    model = build_segmenter("semfpn", load_encoder("random:vit_tiny12_test")[0], 150, SEMFPN)
    assert [len(head) for head in model.scale_heads] == [1, 1, 2, 3]  # log2(s / 4), at least 1
    assert model.upsample == [False, True, True, True]
    assert [conv.in_channels for conv in model.lateral] == [32] * 4
    assert [conv.out_channels for conv in model.lateral] == [256] * 4
    assert model.classifier.in_channels == 128 and model.dropout.p == 0.1
    seen = []
    model.classifier.register_forward_hook(lambda m, i, o: seen.append(o.shape) and None)
    assert model.eval()(torch.randn(1, 3, 48, 64)).shape == (1, 150, 48, 64)
    assert seen == [(1, 150, 12, 16)]  # at the ViT's stride (16 for ViT-S/16)


def test_upernet_pyramid_strides_channels_and_auxiliary_head():
    model = build_segmenter("upernet", load_encoder("random:vit_tiny12_test")[0], 150, UPERNET)
    images = torch.randn(2, 3, 48, 64)
    maps = model.pyramid(model.features(model.backbone, images))
    assert [tuple(m.shape[-2:]) for m in maps] == [(48, 64), (24, 32), (12, 16), (6, 8)]
    assert [m.shape[1] for m in maps] == [32] * 4  # patch/4, /2, x1, x2 (4..32 for ViT-S/16)
    decode = model.decode
    assert [len(branch) for branch in decode.ppm] == [2] * 4
    assert [b[0].output_size for b in decode.ppm] == [1, 2, 3, 6]
    assert decode.classifier.in_channels == 512 and decode.fpn_bottleneck[0].in_channels == 2048
    assert model.auxiliary[0][0].out_channels == 256 and model.aux_weight == 0.4
    logits, auxiliary = model.train()(images)
    assert logits.shape == auxiliary.shape == (2, 150, 48, 64)
    assert model.eval()(images).shape == (2, 150, 48, 64)


def test_adamw_warm_up_poly_and_decay_groups():
    p = selfpatch_ade20k_semfpn_vit_40k()
    for step in (0, 1, 700, 1499):  # mmcv: poly x (1 - (1 - step / 1500)(1 - 1e-6))
        poly = 6e-5 * (1 - step / 40_000)
        assert p.lr(step, 6e-5) == pytest.approx(poly * (1 - (1 - step / 1500) * (1 - 1e-6)))
    assert p.lr(1500, 6e-5) == pytest.approx(6e-5 * (1 - 1500 / 40_000))
    assert p.lr(40_000, 6e-5) == 0.0 and p.lr(0, 6e-5) == pytest.approx(6e-11)
    model = build_segmenter("upernet", load_encoder("random:vit_tiny12_test")[0], 150, UPERNET)
    optimizer = build_optimizer(model, UPERNET, 6e-5)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["betas"] == (0.9, 0.999)
    decayed, exempt = optimizer.param_groups
    assert (decayed["weight_decay"], exempt["weight_decay"]) == (0.01, 0.0)
    assert exempt["params"] == [model.backbone.pos_embed]  # LayerNorms decay, as the authors'
    assert len(decayed["params"]) + 1 == len(list(model.parameters()))


def test_ground_truth_as_prediction_scores_one_on_ade20k(tmp_path):
    ade = make_ade20k(tmp_path, train=1, val=3)
    val = build_segmentation_set("ade20k", str(ade), "val")
    labels = iter([val.load(index)[1] for index in range(len(val))])

    class Oracle(torch.nn.Module):
        def forward(self, image):  # one-hot of the image's own label, in the images' order
            label = next(labels).clamp(max=149)  # IGNORE pixels: any class, they do not count
            return F.one_hot(label, 150).permute(2, 0, 1)[None].float()

    job = Job(
        protocol=replace(SEMFPN, base_size=None),  # the test input at the label's own size
        lr=6e-5,
        seed=0,
        train_set=val,
        eval_set=val,
        run_dir=tmp_path,
        weights_sha256="0" * 64,
        mean=(0.5,) * 3,
        std=(0.2,) * 3,
        device="cpu",
        num_workers=0,
    )
    matrix, counts = evaluate(Oracle(), val, job)
    assert (matrix.sum(1) > 0).sum() > 1 and mean_iou(matrix) == 1.0 and len(counts) == 3


TINY = ["--device", "cpu", "--num-workers", "0", "--max-steps", "2", "--batch-size", "2"]


@pytest.mark.parametrize("protocol", [SEMFPN.name, UPERNET.name])
def test_cli_trains_evaluates_and_records_the_protocol(tmp_path, protocol):
    ade = make_ade20k(tmp_path, train=2, val=1)
    export = make_vit_export(tmp_path, cls_token=False, final_norm=False)
    segmentation.main(
        ["--ckpt", str(export), "--protocol", protocol, "--data", str(ade), *TINY]
        + ["--crop", str(CROP), "--records", str(tmp_path / "records")]
        + ["--run-dir", str(tmp_path / "run")]
    )
    (record,) = read_records(tmp_path / "records")
    assert record.task.protocol == protocol and record.task.dataset == "ade20k"
    assert 0.0 <= record.metrics["miou"] <= 100.0 and record.checkpoint.method == "selfpatch"
    settings = record.config["settings"]
    assert settings["backbone"] == "vit" and settings["optimizer"] == "adamw"
    assert settings["crop"] == CROP and settings["base_size"] == [192, 48]  # scaled with --crop
    assert settings["blocks"] == ([2, 5, 8, 11] if protocol == SEMFPN.name else [3, 5, 7, 11])
    assert settings["drop_path"] == 0.1 and settings["lrs"] == [6e-5]
    final = tmp_path / "run" / "final-lr6e-05-seed0" / "checkpoints" / "last.pt"
    state = torch.load(final, weights_only=True)["state"]
    assert state["step"] == 2 and torch.isfinite(torch.tensor(state["loss"]))


def test_a_resnet_on_a_vit_protocol_is_refused_before_anything_is_written(tmp_path):
    export = make_export(tmp_path, "resnet18")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        segmentation.main(
            ["--ckpt", str(export), "--protocol", SEMFPN.name, "--data", str(tmp_path / "no")]
            + ["--records", str(out), "--run-dir", str(out / "run")]
        )
    message = str(stop.value.code)
    assert message == (
        f"error: resnet18 is a ResNet, and {SEMFPN.name} takes ViTs only; for a ResNet use "
        "--protocol byol-paper-fcn/1 or ade20k-semfpn-80k/1"
    )
    assert not out.exists()


def test_a_vit_on_a_resnet_protocol_names_the_vit_protocols(tmp_path):
    with pytest.raises(SystemExit) as stop:
        segmentation.main(
            ["--ckpt", "random:vit_tiny12_test", "--protocol", "ade20k-semfpn-80k/1"]
            + ["--data", str(tmp_path / "no"), "--records", str(tmp_path / "out")]
        )
    assert str(stop.value.code) == (
        "error: vit_tiny12_test is a ViT, and ade20k-semfpn-80k/1 takes ResNets only; for a ViT "
        f"use --protocol {SEMFPN.name} or {UPERNET.name}"
    )
    assert not (tmp_path / "out").exists()


def test_resnet_run_identities_are_unchanged_by_the_vit_fields():
    """A ResNet run directory begun before the ViT protocols existed still resumes."""
    resnet = settings_identity(ade20k_semfpn_80k(), ADDED_FIELDS)
    assert len(resnet) == 23 and "loss_mean" in ADDED_FIELDS and not set(ADDED_FIELDS) & set(resnet)
    vit = settings_identity(SEMFPN, ADDED_FIELDS)
    assert vit["optimizer"] == "adamw" and vit["blocks"] == (2, 5, 8, 11)


def test_the_vit_protocols_average_the_loss_over_every_pixel_as_mmseg():
    """mmseg CrossEntropyLoss (avg_non_ignore False): sum over labelled pixels / all pixels."""
    logits, labels = torch.randn(2, 5, 6, 7), torch.randint(0, 5, (2, 6, 7))
    labels[:, :2] = 255  # padding / ADE20K's "other"
    per_pixel = F.cross_entropy(logits, labels.clamp(max=4), reduction="none")[labels != 255]
    assert SEMFPN.loss_mean == UPERNET.loss_mean == "all"
    assert ade20k_semfpn_80k().loss_mean == "labelled"  # unchanged
    torch.testing.assert_close(pixel_loss(logits, labels, "all"), per_pixel.sum() / labels.numel())
    torch.testing.assert_close(pixel_loss(logits, labels, "labelled"), per_pixel.mean())


def test_the_heads_are_initialised_as_mmseg_does():
    """ConvModules Kaiming-normal fan_out (std sqrt(2 / fan_out)), FPN convs Xavier-uniform,
    conv_seg normal(0, 0.01), zero biases; the backbone untouched."""
    encoder = load_encoder("random:vit_tiny12_test")[0]
    fpn = build_segmenter("semfpn", encoder, 150, SEMFPN)
    upernet = build_segmenter("upernet", encoder, 150, UPERNET)
    for classifier in (fpn.classifier, upernet.decode.classifier, upernet.auxiliary[-1]):
        assert classifier.weight.std().item() == pytest.approx(0.01, rel=0.1)
        assert not classifier.bias.any()
    for conv in (fpn.scale_heads[3][2][0], upernet.decode.fpn_bottleneck[0]):
        fan_out = conv.out_channels * 9
        assert conv.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.05)
    bound = (6 / (256 * 9 + 256 * 9)) ** 0.5  # Xavier-uniform: fan_in, fan_out 256 x 3 x 3
    assert fpn.smooth[0].weight.abs().max().item() == pytest.approx(bound, rel=0.01)
    assert not fpn.lateral[0].bias.any() and not fpn.smooth[2].bias.any()
    torch.testing.assert_close(
        fpn.backbone.blocks[0].attn.qkv.weight, encoder.blocks[0].attn.qkv.weight
    )
