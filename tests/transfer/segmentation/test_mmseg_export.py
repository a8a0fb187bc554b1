"""`python -m transfer.export mmseg`: tensor-only checkpoint, a config mmengine parses, and (marker
`mm`, with mmsegmentation + full mmcv from `make mm`) a model that loads every backbone tensor,
trains a step, and the `--engine mmseg` runner end to end."""

import os
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from pretrain.checkpoint import CheckpointError
from results.record import read_records
from tests.conftest import run_cli
from tests.transfer.segmentation.layouts import make_export, make_voc
from transfer.segmentation import cli as segmentation
from transfer.segmentation import mmseg_export


def _export(tmp_path, arch="resnet18", protocol="byol-paper-fcn/1", **kwargs):
    export = make_export(tmp_path, arch)
    return export, *mmseg_export.export(
        str(export), protocol, tmp_path / "mm", gpus=1, data_root="/data/VOC2012", **kwargs
    )


def test_checkpoint_is_tensor_only_with_every_backbone_key(tmp_path):
    export, weights, _ = _export(tmp_path)
    ours = torch.load(export, weights_only=True)["state_dict"]
    blob = torch.load(weights, weights_only=True)  # no pickled objects
    assert set(blob) == {"state_dict", "meta"}
    assert (
        blob["state_dict"].keys() == ours.keys() and len(ours) == 120
    )  # ResNet-18: 20 convs, 20 BNs x 5
    assert all(torch.equal(blob["state_dict"][k], v) for k, v in ours.items())
    assert blob["meta"]["weights_sha256"].startswith(export.stem.split("-")[1])


def test_config_parses_with_mmengine(tmp_path):
    _, weights, config_path = _export(tmp_path, lr=0.02, seed=3)
    cfg = Config.fromfile(str(config_path))
    backbone = cfg.model.backbone
    assert backbone.type == "ResNet" and backbone.depth == 18  # not ResNetV1c
    assert backbone.init_cfg == {"type": "Pretrained", "checkpoint": str(weights)}
    assert backbone.strides == (1, 2, 2, 1) and backbone.dilations == (1, 1, 1, 2)
    assert cfg.model.decode_head.type == "FCNHead" and cfg.model.decode_head.in_channels == 512
    assert cfg.model.decode_head.dilation == 6 and cfg.model.decode_head.num_convs == 2
    assert cfg.protocol == "byol-paper-fcn/1" and cfg.train_cfg.max_iters == 30_000
    assert cfg.param_scheduler[0].milestones == [21_000, 27_000]
    assert cfg.optim_wrapper.optimizer.lr == 0.02 and cfg.randomness.seed == 3
    assert cfg.train_dataloader.batch_size == 16 and cfg.norm_cfg.type == "BN"  # one GPU
    assert cfg.train_dataloader.dataset.data_root == "/data/VOC2012"
    assert cfg.data_preprocessor.mean == [123.675, 116.28, 103.53]
    _, _, ade_path = _export(tmp_path / "ade", "resnet50", "ade20k-semfpn-80k/1")
    ade = Config.fromfile(str(ade_path))
    assert ade.model.neck.in_channels == [256, 512, 1024, 2048] and ade.num_classes == 150
    assert ade.param_scheduler[0].type == "PolyLR" and ade.train_cfg.max_iters == 80_000
    assert ade.optim_wrapper.paramwise_cfg.norm_decay_mult == 0.0
    steps = {step.type: step for step in ade.train_pipeline}
    assert steps["RandomCrop"].cat_max_ratio == 0.75 and "PhotoMetricDistortion" in steps


def test_eight_gpu_config_uses_syncbn_and_splits_the_batch(tmp_path):
    export = make_export(tmp_path)
    _, config_path = mmseg_export.export(str(export), out=tmp_path / "mm")
    cfg = Config.fromfile(str(config_path))
    assert cfg.norm_cfg.type == "SyncBN" and cfg.train_dataloader.batch_size == 2


def test_unsupported_backbones_and_bad_flags_are_refused(tmp_path, capsys):
    with pytest.raises(CheckpointError, match="mmseg's ResNet has depths"):
        mmseg_export.export("random:resnet18:cifar", out=tmp_path)
    result = run_cli(
        "transfer.export",
        "mmseg",
        "--ckpt",
        "random:resnet50",
        "--nproc",
        "3",
        "--out",
        str(tmp_path),
    )
    assert result.returncode != 0 and "--nproc must divide the protocol's batch 16" in result.stderr
    old = run_cli("transfer.export", "mmseg", "--ckpt", "random:resnet50", "--gpus", "4")
    assert old.returncode == 2 and "--gpus is now --nproc" in old.stderr


def _segmentation_on_mmseg(voc: Path, records: Path, *flags: str) -> None:
    """`python -m transfer.segmentation --engine mmseg` in process on a random ResNet-18."""
    inputs = ["--ckpt", "random:resnet18", "--data", str(voc), "--records", str(records)]
    segmentation.main([*inputs, "--engine", "mmseg", *flags])


def test_engine_mmseg_without_mmseg_says_how_to_install(tmp_path, monkeypatch, capsys):
    voc = make_voc(tmp_path, train=2, val=1)
    monkeypatch.setitem(sys.modules, "mmseg", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "mmseg.apis", None)
    with pytest.raises(SystemExit) as exit_info:
        _segmentation_on_mmseg(voc, tmp_path / "records")
    assert "run `make mm`" in str(exit_info.value.code)
    assert not (tmp_path / "records").exists()  # refused before any work, no record


def _require_mm():
    """Skip without mmseg + full mmcv, except as root: `make test` (and so CI, as root) builds
    them first, so there a missing mmcv is a failure, never a skip counted as a pass."""
    try:
        import mmcv.ops  # noqa: F401
        import mmseg.apis  # noqa: F401
    except Exception as error:  # ImportError, or mmseg's assert on the mmcv version
        message = f"mmsegmentation with full mmcv is not importable ({error}); run `make mm`"
        if os.geteuid() != 0:
            pytest.skip(message)
        pytest.fail(message)


@pytest.mark.mm
def test_mmseg_builds_loads_every_backbone_tensor_and_trains_a_step(tmp_path):
    _require_mm()
    from mmengine.optim import build_optim_wrapper
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmseg.utils import register_all_modules

    register_all_modules()
    export, weights, config_path = _export(tmp_path)
    cfg = Config.fromfile(str(config_path))
    model = MODELS.build(cfg.model)
    model.init_weights()
    ours = torch.load(export, weights_only=True)["state_dict"]
    backbone = model.backbone.state_dict()
    assert backbone.keys() == ours.keys()
    assert sum(torch.equal(backbone[k], v) for k, v in ours.items()) == len(ours) == 120
    sample = SegDataSample()
    sample.gt_sem_seg = PixelData(data=torch.randint(0, 21, (1, 64, 64)))
    data = {
        "inputs": [torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)] * 2,
        "data_samples": [sample, sample],
    }
    model.data_preprocessor.size = (64, 64)
    losses = model.train_step(data, build_optim_wrapper(model, cfg.optim_wrapper))
    assert torch.isfinite(losses["loss"]) and losses["loss"] > 0
    assert not torch.equal(model.backbone.conv1.weight, ours["conv1.weight"])  # it trained


@pytest.mark.mm
def test_engine_mmseg_end_to_end_writes_the_same_record(tmp_path):
    _require_mm()
    voc = make_voc(tmp_path, train=3, val=2)
    short = ["--max-steps", "2", "--batch-size", "2", "--crop", "64", "--num-workers", "0"]
    one_run = ["--lrs", "0.01", "--seeds", "0", "--run-dir", str(tmp_path / "run")]
    before = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    _segmentation_on_mmseg(voc, tmp_path / "records", *short, *one_run)
    assert os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD") == before  # restored
    (record,) = read_records(tmp_path / "records")
    assert record.status == "complete" and record.task.protocol == "byol-paper-fcn/1"
    assert record.selection["engine"] == "mmseg" and 0 <= record.metrics["miou"] <= 100


def test_runner_config_holds_this_runs_split_lists(tmp_path):
    """The mmseg engine's LR sweep trains on train_aug minus the held-out ids, tests on them."""
    from evaluate.features import load_encoder
    from evaluate.harness import EvalInputs
    from evaluate.transforms import Preprocessing
    from transfer.segmentation import mmseg_runner
    from transfer.segmentation.data import build_segmentation_set, hold_out_images

    voc = make_voc(tmp_path, train=5, val=1)
    train_aug = build_segmentation_set("voc2012", str(voc), "train_aug")
    rest, held = hold_out_images(train_aug, 2)
    encoder, metadata = load_encoder("random:resnet18", seed=1)
    config = segmentation.parse_config(
        ["--ckpt", "random:resnet18", "--max-steps", "7", "--batch-size", "4", "--num-workers", "0"]
    )
    config = segmentation.replace(config, settings=segmentation.resolve(config))
    inputs = EvalInputs(
        encoder,
        metadata,
        "cpu",
        tmp_path,
        0.0,
        train_set=rest,
        eval_set=held,
        preprocessing=Preprocessing(48, (0.5,) * 3, (0.25,) * 3),
        work_dir=tmp_path / "run",
    )
    cfg, _ = mmseg_runner.prepare_config(config, inputs, 0.1, 2, rest, held, tmp_path / "run")
    train, val = cfg.train_dataloader, cfg.val_dataloader
    assert Path(train.dataset.ann_file).read_text().split() == list(rest.ids)
    assert Path(val.dataset.ann_file).read_text().split() == list(held.ids)
    assert val.dataset.data_prefix.seg_map_path == "SegmentationClassAug"  # held-out: aug labels
    assert train.dataset.data_root == str(voc) and train.batch_size == 4
    assert cfg.train_cfg.max_iters == 7 and cfg.optim_wrapper.optimizer.lr == 0.1
    assert cfg.randomness.seed == 2 and cfg.data_preprocessor.mean == [127.5] * 3
    weights = torch.load(cfg.model.backbone.init_cfg.checkpoint, weights_only=True)
    assert weights["meta"]["weights_sha256"] == metadata["weights_sha256"]  # seed-1 weights
