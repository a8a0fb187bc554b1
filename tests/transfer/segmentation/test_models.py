"""The segmenters: strict loading of every backbone tensor, shapes, a few training steps, eval."""

import math

import pytest
import torch

from evaluate.features import load_encoder
from pretrain.checkpoint import CheckpointError
from pretrain.rundir import NonFiniteLossError
from tests.transfer.segmentation.layouts import make_export, make_voc
from transfer.segmentation import engine
from transfer.segmentation.data import build_segmentation_set
from transfer.segmentation.engine import Job, parameter_groups, run_job
from transfer.segmentation.models import (
    backbone_keys_loaded,
    build_segmenter,
    resnet_stages,
)
from transfer.segmentation.protocols import ade20k_semfpn_80k, voc12aug_fcn

STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_every_backbone_tensor_lands_in_each_segmenter(tmp_path):
    export = make_export(tmp_path, "resnet50")
    blob = torch.load(export, weights_only=True)
    state = blob["state_dict"]
    assert len(state) == 318  # ResNet-50 minus fc: 53 convs + 53 BNs x 5 tensors
    for head in ("fcn", "semfpn"):
        encoder, _ = load_encoder(str(export))
        model = build_segmenter(head, encoder, 21)
        backbone_keys = [k for k in model.state_dict() if k.startswith("backbone.")]
        assert len(backbone_keys) == len(state)
        assert backbone_keys_loaded(model, state) == len(state)
        assert all(p.requires_grad for p in model.parameters())  # fine-tuned, not frozen


def test_fcn_has_output_stride_16_and_full_size_logits(tmp_path):
    encoder, _ = load_encoder("random:resnet18")
    model = build_segmenter("fcn", encoder, 21).eval()
    images = torch.randn(1, 3, 64, 96)
    c5 = resnet_stages(model.backbone, images)[-1]
    assert c5.shape[-2:] == (4, 6)  # 64/16, 96/16: conv5 dilated, not strided
    assert model.backbone.layer4[0].conv1.dilation == (2, 2)
    assert [m.dilation for m in model.head.modules() if isinstance(m, torch.nn.Conv2d)] == [
        (6, 6),
        (6, 6),
    ]
    assert model(images).shape == (1, 21, 64, 96)
    fpn = build_segmenter("semfpn", load_encoder("random:resnet18")[0], 150).eval()
    assert fpn(images).shape == (1, 150, 64, 96)


def test_schedules_follow_the_presets():
    voc, ade = voc12aug_fcn(), ade20k_semfpn_80k()
    assert voc.name == "byol-paper-fcn/1" and len(voc.lrs) == 5 and len(voc.seeds) == 5
    assert voc.lrs[0] == 1e-3 and abs(voc.lrs[-1] - 0.1) < 1e-12 and voc.heldout == 2119
    assert [voc.lr(i, 0.1) for i in (0, 20_999, 21_000, 26_999, 27_000)] == [
        0.1,
        0.1,
        0.1 * 0.1,
        0.1 * 0.1,
        0.1 * 0.1 * 0.1,
    ]
    assert ade.lr(0, 0.01) == 0.01 and abs(ade.lr(80_000, 0.01) - 1e-4) < 1e-12
    model = build_segmenter("semfpn", load_encoder("random:resnet18")[0], 150)
    groups = parameter_groups(model, ade)
    assert groups[1]["weight_decay"] == 0.0 and groups[0]["weight_decay"] == 5e-4
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def _job(tmp_path, protocol, train_set, eval_set, name):
    return Job(
        protocol=protocol,
        lr=0.01,
        seed=0,
        train_set=train_set,
        eval_set=eval_set,
        run_dir=tmp_path / name,
        weights_sha256="0" * 64,
        mean=STATS[0],
        std=STATS[1],
        device="cpu",
        num_workers=0,
        ckpt_every_min=0,
    )


def test_each_model_trains_with_finite_losses_and_evaluates(tmp_path):
    voc = make_voc(tmp_path, train=4, val=2)
    train_set = build_segmentation_set("voc2012", str(voc), "train_aug")
    val = build_segmentation_set("voc2012", str(voc), "val")
    encoder, _ = load_encoder("random:resnet18")
    tiny = {"iterations": 2, "batch_size": 2, "crop": 48}
    for protocol in (voc12aug_fcn(), ade20k_semfpn_80k()):
        protocol = protocol.__class__(**{**protocol.__dict__, **tiny, "base_size": None})
        result = run_job(_job(tmp_path, protocol, train_set, val, protocol.head), encoder)
        assert 0.0 <= result["miou"] <= 100.0 and result["iterations"] == 2
        state = torch.load(tmp_path / protocol.head / "checkpoints" / "last.pt", weights_only=True)
        assert state["state"]["step"] == 2 and torch.isfinite(torch.tensor(state["state"]["loss"]))
        assert result["seconds_per_iteration"] > 0


def test_resume_continues_from_the_last_checkpoint(tmp_path):
    voc = make_voc(tmp_path, train=3, val=1)
    train_set = build_segmentation_set("voc2012", str(voc), "train_aug")
    val = build_segmentation_set("voc2012", str(voc), "val")
    encoder, _ = load_encoder("random:resnet18")
    protocol = voc12aug_fcn().__class__(
        **{**voc12aug_fcn().__dict__, "iterations": 4, "batch_size": 1, "crop": 48}
    )
    job = _job(tmp_path, protocol, train_set, val, "run")  # a checkpoint every iteration
    straight = run_job(job, encoder)
    final = torch.load(job.run_dir / "checkpoints" / "last.pt", weights_only=True)["state"]
    # An interruption between iterations 3 and 4: only the iteration-3 checkpoint is left.
    (job.run_dir / "result.json").unlink()
    (job.run_dir / "checkpoints" / "last.pt").unlink()
    assert torch.load(job.run_dir / "checkpoints" / "previous.pt")["state"]["step"] == 3
    resumed = run_job(job, encoder)
    again = torch.load(job.run_dir / "checkpoints" / "last.pt", weights_only=True)["state"]
    assert again["step"] == 4 and resumed["miou"] == straight["miou"]
    for key, value in final["model"].items():  # bit-exact: data draws and dropout are seeded
        assert torch.equal(value, again["model"][key]), key
    other = _job(
        tmp_path, protocol.__class__(**{**protocol.__dict__, "crop": 40}), train_set, val, "run"
    )
    with pytest.raises(CheckpointError, match="holds a different segmentation run"):
        run_job(other, encoder)


def test_a_non_finite_loss_stops_naming_step_and_lr_and_keeps_the_last_checkpoint(
    tmp_path, monkeypatch
):
    voc = make_voc(tmp_path, train=3, val=1)
    train_set = build_segmentation_set("voc2012", str(voc), "train_aug")
    val = build_segmentation_set("voc2012", str(voc), "val")
    protocol = voc12aug_fcn().__class__(
        **{**voc12aug_fcn().__dict__, "iterations": 4, "batch_size": 1, "crop": 48}
    )
    job = _job(tmp_path, protocol, train_set, val, "run")  # a checkpoint every iteration
    calls, real_step = [], engine.train_step

    def nan_at_iteration_3(*args, **kwargs):
        calls.append(1)
        return math.nan if len(calls) == 4 else real_step(*args, **kwargs)

    monkeypatch.setattr(engine, "train_step", nan_at_iteration_3)
    with pytest.raises(NonFiniteLossError, match=r"at step 3 \(lr [0-9.e-]+\)"):
        run_job(job, load_encoder("random:resnet18")[0])
    kept = torch.load(job.run_dir / "checkpoints" / "last.pt", weights_only=True)["state"]
    assert kept["step"] == 3 and not (job.run_dir / "result.json").exists()
