"""The detectors: every backbone tensor of the checkpoint lands in them, each model trains a few
iterations with finite losses and evaluates through the CLI, and an interrupted run resumes to
the same weights as an uninterrupted one."""

import dataclasses
import json
import math

import pytest
import torch

from evaluate.features import load_encoder
from pretrain.backbones import build_backbone
from pretrain.checkpoint import CheckpointError, export_backbone
from results.record import read_records
from tests.transfer.detection.layouts import make_coco, make_voc
from transfer.detection import cli as detection
from transfer.detection import models as detection_models
from transfer.detection import train as detection_train
from transfer.detection.data import VocDetection
from transfer.detection.protocols import byol_paper_frcnn_c4

TINY = [
    "--device",
    "cpu",
    "--num-workers",
    "0",
    "--train-sizes",
    "96",
    "--test-size",
    "96",
    "--roi-batch-per-image",
    "8",
    "--rpn-post-nms-test",
    "16",
    "--detections-per-image",
    "10",
]
SHORT = ["--batch-size", "2", "--max-steps", "2"]  # the FPN and Mask R-CNN runs


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """An export of a ResNet-18 whose BN statistics are not the defaults (so copies show)."""
    torch.manual_seed(1)
    encoder, _ = build_backbone("resnet18")
    for module in encoder.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
            module.num_batches_tracked.fill_(7)
    metadata = {"label": "tiny-r18", "arch": "resnet18", "cifar_stem": False, "method": "byol"}
    return export_backbone(tmp_path_factory.mktemp("export"), encoder.state_dict(), metadata)


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "VOCdevkit"
    return make_voc(root, {("2007", "trainval"): 4, ("2012", "trainval"): 2, ("2007", "test"): 2})


def _expected_key(model: str, key: str) -> str:
    """Where detectron2's C4 / FPN designs put a ResNet tensor (written out independently)."""
    if model == "c4":
        return f"roi_heads.box_head.{key}" if key.startswith("layer4") else f"backbone.{key}"
    return f"backbone.body.{key}"


@pytest.mark.parametrize("model", detection_models.RESNET_MODELS)
@pytest.mark.parametrize("norm", ["frozen-bn", "syncbn"])
def test_every_backbone_tensor_lands_in_the_detector(export, model, norm):
    original = torch.load(export, weights_only=True)["state_dict"]
    encoder, _ = load_encoder(str(export))
    freeze_at = 2 if norm == "frozen-bn" else 0
    spec = detection_models.DetectorSpec(
        model=model, num_classes=20, norm=norm, freeze_at=freeze_at
    )
    detector = detection_models.build_detector(encoder, spec)
    state = detector.state_dict()
    landed = [key for key in original if _expected_key(model, key) in state]
    for key in landed:
        assert torch.equal(state[_expected_key(model, key)], original[key]), key
    counters = [key for key in original if key.endswith("num_batches_tracked")]
    assert len(original) == 120 and len(counters) == 20  # ResNet-18: 20 convs, 20 BNs x 5
    if norm == "frozen-bn":  # FrozenBatchNorm2d has no step counter; everything else lands
        assert sorted(landed) == sorted(set(original) - set(counters))
    else:
        assert sorted(landed) == sorted(original)
    reference = {k: v.clone() for k, v in original.items()}
    checked = detection_models.check_backbone_loaded(detector, reference, model)
    assert checked == len(landed)
    reference["layer2.0.conv1.weight"] += 1e-3  # a single different tensor is caught
    with pytest.raises(RuntimeError, match="layer2.0.conv1.weight"):
        detection_models.check_backbone_loaded(detector, reference, model)
    trainable = {
        n.split(".")[2 if model != "c4" else 1]
        for n, p in detector.named_parameters()
        if p.requires_grad and n.startswith("backbone.")
    }
    if norm == "frozen-bn":  # freeze_at 2: stem and layer1 stay fixed
        assert not trainable & {"conv1", "bn1", "layer1"} and "layer2" in trainable
    else:
        assert {"conv1", "bn1", "layer1", "layer3"} <= trainable


def _run(ckpt, data, records, run_dir, *flags: str) -> None:
    """The detection CLI, in process, on TINY settings: `--ckpt --data --records --run-dir`, then
    `flags`."""
    inputs = ["--ckpt", str(ckpt), "--data", str(data)]
    outputs = ["--records", str(records), "--run-dir", str(run_dir)]
    detection.main([*inputs, *outputs, *TINY, *flags])


def read_voc_test(root):
    return VocDetection(root, [("2007", "test")])


def _only_record(records_dir):
    (record,) = read_records(records_dir)  # validated on read
    return record


def test_c4_trains_evaluates_and_resumes(export, voc, tmp_path):
    records, run_dir = tmp_path / "records", tmp_path / "run"
    _run(export, voc, records, run_dir, "--max-steps", "2")
    first = _only_record(records)
    assert first.status == "complete" and first.task.family == "detection"
    assert (first.task.dataset, first.task.split) == ("voc07", "test")
    assert first.task.protocol == "byol-paper-frcnn-c4-custom/1"  # sizes were changed
    assert set(first.metrics) == {"ap50", "ap", "ap75"}
    low, high = first.intervals["ap50"]  # the bootstrap interval over the test images
    assert 0 <= low <= high <= 100 and first.examples["count"] == len(read_voc_test(voc))
    assert first.selection["overrides"]["test_size"] == [1024, 96]
    assert first.selection["iterations_run"] == 2 and first.selection["resumed_from"] == 0
    assert first.selection["backbone_tensors_loaded"] == 100  # 120 - 20 BN step counters
    assert all(math.isfinite(v) for v in first.selection["final_losses"].values())
    assert first.selection["protocol_settings"]["train_sets"] == ["2007-trainval"]
    lines = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert (lines[-1]["kind"], lines[-1]["step"]) == ("step", 2)
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    for path in records.glob("*.json"):
        path.rename(tmp_path / path.name)
    # the same run directory: resumes at iteration 2
    _run(export, voc, records, run_dir, "--max-steps", "3")
    second = _only_record(records)
    assert second.selection["resumed_from"] == 2 and second.selection["iterations_run"] == 1


def test_fpn_with_group_norm_trains_on_voc07_12(export, voc, tmp_path):
    protocol = ["--protocol", "moco-detectron2-c4-24k/1", "--model", "fpn", "--norm", "gn"]
    _run(export, voc, tmp_path, tmp_path / "run", *protocol, *SHORT)
    record = _only_record(tmp_path)
    assert record.task.protocol == "moco-detectron2-c4-24k-custom/1"
    assert record.selection["protocol_settings"]["train_sets"] == ["2007-trainval", "2012-trainval"]
    assert record.selection["backbone_tensors_loaded"] == 100  # gn: backbone BN frozen
    assert all(math.isfinite(v) for v in record.selection["final_losses"].values())
    assert 0.0 <= record.metrics["ap50"] <= 100.0


def test_mask_rcnn_trains_and_reports_box_and_mask_ap(export, tmp_path):
    data = tmp_path / "coco"
    make_coco(data, "train2017", 4)
    make_coco(data, "val2017", 2, seed=1)
    _run(export, data, tmp_path, tmp_path / "run", "--protocol", "coco-maskrcnn-fpn-1x/1", *SHORT)
    record = _only_record(tmp_path)
    assert (record.task.dataset, record.task.split) == ("coco", "val2017")
    assert set(record.metrics) == {"ap", "ap50", "ap75", "mask_ap", "mask_ap50", "mask_ap75"}
    assert "loss_mask" in record.selection["final_losses"]
    assert all(math.isfinite(v) for v in record.selection["final_losses"].values())


def test_resumed_training_equals_uninterrupted(export, voc, tmp_path):
    protocol = dataclasses.replace(
        byol_paper_frcnn_c4(),
        model="fpn",
        train_sizes=(64, 96),
        test_size=64,
        roi_batch_per_image=8,
        batch_size=1,
        base_lr=0.01,
    )
    images = VocDetection(voc, [("2007", "trainval")])

    def fresh_detector():
        encoder, metadata = load_encoder(str(export))
        torch.manual_seed(0)
        spec = detection.detector_spec(protocol, 20, metadata)
        return detection_models.build_detector(encoder, spec)

    def settings(run_dir, stop, identity="run"):
        identity = {"run": identity}
        return detection_train.RunSettings(
            run_dir, identity, torch.device("cpu"), seed=3, num_workers=0, max_iters=stop
        )

    torch.manual_seed(5)
    straight = fresh_detector()
    detection_train.train(straight, images, protocol, settings(tmp_path / "a", 3))
    torch.manual_seed(5)
    interrupted = fresh_detector()
    detection_train.train(interrupted, images, protocol, settings(tmp_path / "b", 2))
    torch.manual_seed(123)  # whatever the process did meanwhile
    resumed = fresh_detector()
    summary = detection_train.train(resumed, images, protocol, settings(tmp_path / "b", 3))
    assert summary["resumed_from"] == 2 and summary["iterations_run"] == 1
    expected, got = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    initial = fresh_detector().state_dict()
    changed = [k for k in expected if not torch.equal(expected[k], initial[k])]
    assert changed  # training moved weights, so the equality above is not vacuous
    with pytest.raises(CheckpointError, match="different detection run"):
        detection_train.train(fresh_detector(), images, protocol, settings(tmp_path / "b", 3, "x"))


def test_precise_bn_sets_the_average_of_batch_statistics(export, voc, tmp_path):
    protocol = dataclasses.replace(
        detection.PROTOCOLS["moco-detectron2-c4-24k/1"](),
        train_sizes=(64,),
        batch_size=1,
        roi_batch_per_image=8,
        precise_bn_iters=3,
    )
    encoder, metadata = load_encoder(str(export))
    detector = detection_models.build_detector(
        encoder, detection.detector_spec(protocol, 20, metadata)
    )
    extra_norm = detector.roi_heads.box_head.norm  # MoCo's BN after res5, [R, 512, 4, 4] here
    seen = []
    extra_norm.register_forward_hook(
        lambda module, inputs, output: seen.append(
            (inputs[0].mean(dim=(0, 2, 3)), inputs[0].var(dim=(0, 2, 3), unbiased=True))
        )
    )
    images = VocDetection(voc, [("2007", "trainval")])
    run = detection_train.RunSettings(
        tmp_path, "x", torch.device("cpu"), num_workers=0, max_iters=5
    )
    updated = detection_train.precise_bn(detector, images, protocol, run)
    assert updated == 21  # 20 backbone BNs (syncbn: trained) + the extra norm
    assert len(seen) == 3 and extra_norm.momentum == 0.1  # momentum restored
    mean = torch.stack([m for m, _ in seen]).mean(0)
    var = torch.stack([v for _, v in seen]).mean(0)
    assert torch.allclose(extra_norm.running_mean, mean, atol=1e-5)
    assert torch.allclose(extra_norm.running_var, var, rtol=1e-4, atol=1e-5)
    frozen = dataclasses.replace(protocol, norm="frozen-bn")
    encoder, metadata = load_encoder(str(export))
    spec = detection.detector_spec(frozen, 20, metadata)
    nothing = detection_models.build_detector(encoder, spec)
    assert detection_train.precise_bn(nothing, images, frozen, run) == 0


def test_non_finite_loss_stops_with_a_failed_record(voc, tmp_path):
    encoder, _ = build_backbone("resnet18")
    state = encoder.state_dict()
    state["layer3.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    metadata = {"label": "nan-r18", "arch": "resnet18", "cifar_stem": False}
    broken = export_backbone(tmp_path / "nan", state, metadata)
    records = tmp_path / "records"
    # The CLI's error boundary: one `error:` sentence, exit status 1 (NonFiniteLossError).
    with pytest.raises(SystemExit, match=r"^error: .*non-finite at step 0 \(lr 0.001\): nan"):
        _run(broken, voc, records, tmp_path / "run", "--max-steps", "2")
    record = _only_record(records)
    assert record.status == "failed" and "NonFiniteLossError" in record.error
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()  # nothing bad was saved
