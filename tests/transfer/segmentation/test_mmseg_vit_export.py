"""`python -m transfer.export mmseg` for ViTs (SelfPatch's ADE20K protocols): mmseg names for every
tensor, configs mmengine parses, the LR schedule mmengine computes from them, refusals; and
(marker `mm`) mmseg builds the model, init_weights loads every tensor, and its ViT's block
outputs equal our segmentation backbone's."""

import pytest
import torch
from mmengine.config import Config

from evaluate.features import load_encoder
from pretrain.checkpoint import CheckpointError
from results.record import read_records
from tests.transfer.segmentation.layouts import make_ade20k, make_export, make_vit_export
from tests.transfer.segmentation.test_mmseg_export import _require_mm
from transfer.segmentation import cli as segmentation
from transfer.segmentation import mmseg_export
from transfer.segmentation.engine import pixel_loss
from transfer.segmentation.models import build_segmenter
from transfer.segmentation.protocols import PROTOCOLS
from transfer.segmentation.vit_models import segmentation_vit

SEMFPN, UPERNET = "selfpatch-ade20k-semfpn-vit-40k/1", "selfpatch-ade20k-upernet-vit-160k/1"
CROP = 48  # vit_tiny12_test: a 12x12 pos_embed grid in the config (8x8 in the export)


def _export(tmp_path, protocol=SEMFPN, cls_token=True, **kwargs):
    export = make_vit_export(tmp_path, cls_token=cls_token, final_norm=cls_token)
    out = tmp_path / "mm"
    return export, *mmseg_export.export(str(export), protocol, out, gpus=1, **kwargs)


def test_every_vit_tensor_is_written_under_its_mmseg_name(tmp_path):
    export, weights, _ = _export(tmp_path)
    ours = torch.load(export, weights_only=True)["state_dict"]
    written = torch.load(weights, weights_only=True)["state_dict"]
    assert len(ours) == 150 and len(written) == 148  # the final norm is not written
    assert "ln1.weight" not in written and "norm.weight" not in written
    pairs = {  # vit2mmseg.py's renames, spelled out
        "patch_embed.proj.weight": "patch_embed.projection.weight",
        "blocks.3.norm1.bias": "layers.3.ln1.bias",
        "blocks.3.norm2.weight": "layers.3.ln2.weight",
        "blocks.7.attn.qkv.weight": "layers.7.attn.attn.in_proj_weight",
        "blocks.7.attn.qkv.bias": "layers.7.attn.attn.in_proj_bias",
        "blocks.11.attn.proj.weight": "layers.11.attn.attn.out_proj.weight",
        "blocks.0.mlp.fc1.bias": "layers.0.ffn.layers.0.0.bias",
        "blocks.0.mlp.fc2.weight": "layers.0.ffn.layers.1.weight",
        "cls_token": "cls_token",
        "pos_embed": "pos_embed",
    }
    for ours_key, mmseg_key in pairs.items():
        assert torch.equal(written[mmseg_key], ours[ours_key]), ours_key
    values = sorted(v.sum().item() for k, v in ours.items() if not k.startswith("norm."))
    assert values == sorted(v.sum().item() for v in written.values())  # nothing else changed


def test_a_vit_without_cls_gets_zero_slots_mmseg_drops(tmp_path):
    export, weights, _ = _export(tmp_path, cls_token=False)
    ours = torch.load(export, weights_only=True)["state_dict"]
    written = torch.load(weights, weights_only=True)["state_dict"]
    assert len(ours) == 147 and len(written) == 148
    assert not written["cls_token"].any() and not written["pos_embed"][:, 0].any()
    assert torch.equal(written["pos_embed"][:, 1:], ours["pos_embed"])


@pytest.mark.parametrize("protocol", [SEMFPN, UPERNET])
def test_vit_configs_parse_with_the_protocols_settings(tmp_path, protocol):
    _, weights, config_path = _export(tmp_path, protocol, crop=CROP)
    cfg, settings = Config.fromfile(str(config_path)), PROTOCOLS[protocol]()
    backbone = cfg.model.backbone
    assert backbone.type == "VisionTransformer" and backbone.init_cfg.checkpoint == str(weights)
    assert (backbone.with_cls_token, backbone.final_norm) == (False, False)
    assert backbone.out_indices == list(settings.blocks) and backbone.drop_path_rate == 0.1
    assert backbone.img_size == (CROP, CROP) and backbone.patch_size == 4
    assert (backbone.embed_dims, backbone.num_layers, backbone.num_heads) == (32, 12, 2)
    assert backbone.norm_cfg == {"type": "LN", "eps": 1e-6} and backbone.patch_bias is True
    assert cfg.base_size == (CROP * 4, CROP) and cfg.crop == CROP  # scaled with the crop
    assert cfg.protocol == protocol and cfg.train_cfg.max_iters == settings.iterations
    assert cfg.train_dataloader.batch_size == 16 and cfg.norm_cfg.type == "BN"  # one process
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == ("AdamW", 6e-5, 0.01)
    assert set(cfg.optim_wrapper.paramwise_cfg.custom_keys) == {"pos_embed", "cls_token", "norm"}
    if protocol == SEMFPN:
        assert cfg.model.neck.type == "FPN" and cfg.model.neck.in_channels == [32] * 4
        assert cfg.model.decode_head.feature_strides == [4, 8, 16, 32]
    else:
        assert cfg.model.neck.rescales == [4, 2, 1, 0.5] and cfg.model.neck.embed_dim == 32
        assert cfg.model.decode_head.type == "UPerHead" and cfg.model.decode_head.channels == 512
        aux = cfg.model.auxiliary_head
        assert (aux.in_index, aux.channels, aux.loss_decode.loss_weight) == (2, 256, 0.4)


def test_mmengine_computes_the_protocols_learning_rates_from_the_config(tmp_path):
    from mmengine.optim.scheduler import LinearLR, PolyLR

    _, _, config_path = _export(tmp_path, iterations=3_000)
    cfg = Config.fromfile(str(config_path))
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    kinds = {"LinearLR": LinearLR, "PolyLR": PolyLR}
    schedulers = [
        kinds[s["type"]](optimizer, **{k: v for k, v in s.items() if k != "type"})
        for s in cfg.param_scheduler
    ]
    settings = PROTOCOLS[SEMFPN]()
    for step in range(3_000):
        expected = settings.__class__(**{**settings.__dict__, "iterations": 3_000}).lr(step, 6e-5)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-6, abs=1e-15)
        optimizer.step()
        for scheduler in schedulers:
            scheduler.step()


def test_the_export_refuses_the_other_family_naming_the_right_protocols(tmp_path):
    vit = make_vit_export(tmp_path)
    with pytest.raises(CheckpointError) as vit_error:
        mmseg_export.export(str(vit), "ade20k-semfpn-80k/1", tmp_path / "out")
    assert str(vit_error.value) == (
        "vit_tiny12_test is a ViT, and ade20k-semfpn-80k/1 takes ResNets only; for a ViT use "
        f"--protocol {SEMFPN} or {UPERNET}"
    )
    resnet = make_export(tmp_path)
    with pytest.raises(CheckpointError, match="takes ViTs only; for a ResNet use --protocol"):
        mmseg_export.export(str(resnet), SEMFPN, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _mmseg_model(config_path):
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules()
    model = MODELS.build(Config.fromfile(str(config_path)).model)
    model.init_weights()
    return model


@pytest.mark.mm
@pytest.mark.parametrize(("protocol", "cls_token"), [(SEMFPN, True), (UPERNET, False)])
def test_mmseg_loads_every_tensor_and_its_vit_equals_our_backbone(tmp_path, protocol, cls_token):
    _require_mm()
    export, weights, config_path = _export(tmp_path, protocol, cls_token=cls_token, crop=CROP)
    model = _mmseg_model(config_path).eval()
    written = torch.load(weights, weights_only=True)["state_dict"]
    backbone = model.backbone.state_dict()
    assert backbone.keys() == written.keys() and len(written) == 148
    loaded = [k for k, v in written.items() if k != "pos_embed" and torch.equal(backbone[k], v)]
    assert len(loaded) == 147  # and pos_embed, resized to the 12x12 grid:
    settings = PROTOCOLS[protocol]()
    ours = segmentation_vit(load_encoder(str(export))[0], CROP, settings.drop_path).eval()
    assert torch.equal(backbone["pos_embed"][:, 1:], ours.pos_embed)
    images = torch.randn(2, 3, 41, 58)  # not multiples of the patch: padded at the corner
    with torch.no_grad():
        theirs, mine = model.backbone(images), ours.block_patch_tokens(images, settings.blocks)
    assert [tuple(t.shape) for t in theirs] == [(2, 32, 11, 15)] * 4
    for a, b in zip(theirs, mine, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.mm
@pytest.mark.parametrize("protocol", [SEMFPN, UPERNET])
def test_mmseg_decays_what_our_engine_decays_and_trains_a_step(tmp_path, protocol):
    _require_mm()
    from mmengine.optim import build_optim_wrapper
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    _, _, config_path = _export(tmp_path, protocol, crop=CROP)
    model = _mmseg_model(config_path)
    wrapper = build_optim_wrapper(model, Config.fromfile(str(config_path)).optim_wrapper)
    names = {id(p): n for n, p in model.named_parameters()}
    exempt = {
        names[id(p)]
        for g in wrapper.optimizer.param_groups
        if g["weight_decay"] == 0
        for p in g["params"]
    }
    assert exempt == {"backbone.pos_embed", "backbone.cls_token"}  # "norm" matches nothing
    sample = SegDataSample()
    sample.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, CROP, CROP)))
    data = {
        "inputs": [torch.randint(0, 256, (3, CROP, CROP), dtype=torch.uint8)] * 2,
        "data_samples": [sample, sample],
    }
    model.data_preprocessor.size = (CROP, CROP)
    losses = model.train_step(data, wrapper)
    assert torch.isfinite(losses["loss"]) and losses["loss"] > 0
    if protocol == UPERNET:
        assert any(key.startswith("aux.") for key in losses)


@pytest.mark.mm
def test_engine_mmseg_runs_a_vit_protocol_end_to_end(tmp_path):
    _require_mm()
    ade = make_ade20k(tmp_path, train=2, val=1)
    export = make_vit_export(tmp_path, cls_token=False, final_norm=False)
    segmentation.main(
        ["--ckpt", str(export), "--protocol", UPERNET, "--data", str(ade), "--engine", "mmseg"]
        + ["--max-steps", "2", "--batch-size", "2", "--crop", str(CROP), "--num-workers", "0"]
        + ["--records", str(tmp_path / "records"), "--run-dir", str(tmp_path / "run")]
    )
    (record,) = read_records(tmp_path / "records")
    assert record.status == "complete" and record.task.protocol == UPERNET
    assert record.selection["engine"] == "mmseg" and 0 <= record.metrics["miou"] <= 100


@pytest.mark.mm
def test_our_vit_protocols_loss_is_mmsegs_cross_entropy():
    _require_mm()
    from mmseg.models.losses import CrossEntropyLoss

    logits, labels = torch.randn(2, 5, 6, 7), torch.randint(0, 5, (2, 6, 7))
    labels[:, :2] = 255
    theirs = CrossEntropyLoss(loss_weight=1.0)(logits, labels, ignore_index=255)
    torch.testing.assert_close(pixel_loss(logits, labels, PROTOCOLS[SEMFPN]().loss_mean), theirs)


@pytest.mark.mm
@pytest.mark.parametrize("protocol", [SEMFPN, UPERNET])
def test_our_heads_have_mmsegs_parameters_one_for_one(tmp_path, protocol):
    """Neck + decode head (+ auxiliary head) of the exported mmseg model and the built-in
    engine's head: the same parameter and buffer shapes, one for one."""
    _require_mm()
    export, _, config_path = _export(tmp_path, protocol, crop=CROP)
    theirs = _mmseg_model(config_path).state_dict()
    settings = PROTOCOLS[protocol]()
    ours = build_segmenter(settings.head, load_encoder(str(export))[0], 150, settings).state_dict()

    def head_shapes(state):
        return sorted(tuple(v.shape) for k, v in state.items() if not k.startswith("backbone."))

    assert head_shapes(theirs) == head_shapes(ours)
    assert len([k for k in theirs if k.startswith("backbone.")]) == 148  # + cls_token, [CLS] pos
    assert len([k for k in ours if k.startswith("backbone.")]) == 147
