"""`python -m transfer.detection --protocol selfpatch-coco-maskrcnn-vit-1x/1`: the published
settings of the preset, a short run through the CLI (finite losses, box and mask AP, the
settings recorded), ground truth as predictions scoring 100 through the same evaluation, and the
refusals of the other backbone family, each one sentence with nothing written."""

import dataclasses
import math

import numpy as np
import pytest

from results.record import read_records
from tests.transfer.detection.layouts import make_coco
from tests.transfer.detection.vit_exports import make_vit_export
from transfer.detection import cli as detection
from transfer.detection.data import CocoDetection
from transfer.detection.protocols import PROTOCOLS, VIT_PROTOCOL, in_iterations

TINY = [  # 64 px images at 32 px: the pyramid of the patch-4 test ViT has strides 1..8
    "--device",
    "cpu",
    "--num-workers",
    "0",
    "--train-sizes",
    "32",
    "--test-size",
    "32",
    "--batch-size",
    "1",
    "--roi-batch-per-image",
    "8",
    "--rpn-post-nms-test",
    "16",
    "--detections-per-image",
    "10",
    "--max-steps",
    "2",
]


def test_the_preset_states_the_published_config():
    """mask_rcnn_vit_small_12_p16_1x_coco.py and its _base_ files, value by value."""
    protocol = PROTOCOLS[VIT_PROTOCOL]()
    assert (protocol.backbone, protocol.model, protocol.dataset) == ("vit", "vit-mask-fpn", "coco")
    assert (protocol.num_heads, protocol.drop_path, protocol.blocks) == (8, 0.05, (3, 5, 7, 11))
    assert (protocol.optimizer, protocol.base_lr, protocol.betas) == ("adamw", 5e-5, (0.9, 0.999))
    assert protocol.weight_decay == 0.05
    assert protocol.no_decay_keys == ("pos_embed", "cls_token", "norm")
    assert (protocol.epochs, protocol.lr_step_epochs) == (12, (8, 11))
    assert (protocol.warmup_iters, protocol.warmup_factor) == (1000, 0.001)
    assert protocol.train_sizes == (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)
    assert (protocol.resize, protocol.flip, protocol.test_size, protocol.max_size) == (
        "detr",
        True,
        800,
        1333,
    )
    assert (protocol.roi_sampling_ratio, protocol.roi_batch_per_image, protocol.amp) == (
        0,
        512,
        True,
    )
    assert (protocol.rpn_pre_nms_train, protocol.rpn_pre_nms_test) == (2000, 1000)
    assert (protocol.rpn_post_nms_train, protocol.rpn_post_nms_test) == (1000, 1000)
    assert protocol.batch_size == 8  # 1 image/GPU on 8 GPUs: chosen (unverified)


def test_epochs_become_iterations_and_the_lr_follows_mmdet():
    """12 epochs over COCO train2017's 117,266 images with annotations at batch 8; mmdet's step
    policy (x0.1 at the start of epochs 8 and 11) and linear warm-up (1 - (1 - i/1000)(1 -
    0.001)) x lr over the first 1000 iterations."""
    protocol = in_iterations(PROTOCOLS[VIT_PROTOCOL](), 117_266)
    per_epoch = math.ceil(117_266 / 8)
    assert per_epoch == 14_659 and protocol.max_iters == 12 * per_epoch
    assert protocol.lr_steps == (8 * per_epoch, 11 * per_epoch)
    for iteration in (0, 1, 250, 999):
        warm = 1 - (1 - iteration / 1000) * (1 - 0.001)
        assert protocol.lr(iteration) == pytest.approx(5e-5 * warm)
    assert protocol.lr(1000) == pytest.approx(5e-5)
    assert protocol.lr(8 * per_epoch - 1) == pytest.approx(5e-5)
    assert protocol.lr(8 * per_epoch) == pytest.approx(5e-6)
    assert protocol.lr(11 * per_epoch) == pytest.approx(5e-7)
    unchanged = PROTOCOLS["coco-maskrcnn-fpn-1x/1"]()  # iteration-based: as it is
    assert in_iterations(unchanged, 117_266) == unchanged


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    data = tmp_path_factory.mktemp("data") / "coco"
    make_coco(data, "train2017", 3, size=(64, 64))
    make_coco(data, "val2017", 2, size=(64, 64), seed=1)
    return data


def _only_record(records_dir):
    (record,) = read_records(records_dir)
    return record


def test_vit_mask_rcnn_trains_and_evaluates_through_the_cli(coco, tmp_path):
    export = make_vit_export(tmp_path / "export")
    records = tmp_path / "records"
    argv = ["--ckpt", str(export), "--data", str(coco), "--protocol", VIT_PROTOCOL]
    detection.main([*argv, "--records", str(records), "--run-dir", str(tmp_path / "run"), *TINY])
    record = _only_record(records)
    assert record.status == "complete" and (record.task.dataset, record.task.split) == (
        "coco",
        "val2017",
    )
    assert record.task.protocol == "selfpatch-coco-maskrcnn-vit-1x-custom/1"  # sizes changed
    assert set(record.metrics) == {"ap", "ap50", "ap75", "mask_ap", "mask_ap50", "mask_ap75"}
    assert all(0.0 <= value <= 100.0 for value in record.metrics.values())
    selection = record.selection
    assert "loss_mask" in selection["final_losses"]
    assert all(math.isfinite(v) for v in selection["final_losses"].values())
    assert selection["iterations_run"] == 2 and selection["backbone_tensors_loaded"] == 147
    settings = selection["protocol_settings"]
    assert (settings["num_heads"], settings["blocks"], settings["optimizer"]) == (
        8,
        [3, 5, 7, 11],
        "adamw",
    )
    assert (settings["drop_path"], settings["backbone"], settings["epochs"]) == (0.05, "vit", 12)
    assert selection["schedule"] == {"max_iters": 36, "lr_steps": [24, 33]}  # 3 images, batch 1
    assert selection["precision"] == "fp32"  # CPU: fp16 is CUDA-only (a recorded deviation)
    assert "num_heads" not in selection["overrides"]


def test_num_heads_is_an_override_recorded_as_such():
    config = detection.parse_config(["--ckpt", "x", "--protocol", VIT_PROTOCOL, "--num-heads", "6"])
    protocol, changed = detection.resolve_protocol(config)
    assert protocol.num_heads == 6 and changed == {"num_heads": [8, 6]}
    assert protocol.name == "selfpatch-coco-maskrcnn-vit-1x-custom/1"
    same = detection.parse_config(["--ckpt", "x", "--protocol", VIT_PROTOCOL, "--num-heads", "8"])
    assert detection.resolve_protocol(same)[0].name == VIT_PROTOCOL  # the preset's value


def test_ground_truth_as_predictions_scores_100_through_the_vit_protocol(coco):
    protocol = PROTOCOLS[VIT_PROTOCOL]()
    _, val = detection.load_datasets(protocol, str(coco))
    assert isinstance(val, CocoDetection) and val.with_masks
    predictions = []
    for index in range(len(val)):
        _, target = val[index]
        predictions.append(
            {
                "boxes": target["boxes"].numpy(),
                "labels": target["labels"].numpy(),
                "scores": np.linspace(1.0, 0.5, len(target["labels"])),
                "masks": target["masks"].numpy().astype(bool),
            }
        )
    metrics, _ = detection.evaluate(protocol, predictions, val)
    assert metrics["ap"] == pytest.approx(100.0) and metrics["mask_ap"] == pytest.approx(100.0)
    shifted = [dict(p, boxes=p["boxes"] + np.array([4.0, 0.0, 4.0, 0.0])) for p in predictions]
    assert detection.evaluate(protocol, shifted, val)[0]["ap"] < 100.0


def _refusal(argv: list[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        detection.main(argv)
    return str(stop.value.code)


def test_each_family_is_refused_naming_the_protocols_to_use(tmp_path):
    out = tmp_path / "out"
    common = ["--device", "cpu", "--records", str(out), "--data", str(tmp_path / "no-data")]
    resnet = _refusal(["--ckpt", "random:resnet18", "--protocol", VIT_PROTOCOL, *common])
    assert resnet == (
        f"error: resnet18 is a ResNet, and {VIT_PROTOCOL} takes ViTs only; for a ResNet use "
        "--protocol byol-paper-frcnn-c4/1, moco-detectron2-c4-24k/1 or coco-maskrcnn-fpn-1x/1"
    )
    for protocol in ("coco-maskrcnn-fpn-1x/1", "byol-paper-frcnn-c4/1"):
        vit = _refusal(["--ckpt", "random:vit_tiny12_test", "--protocol", protocol, *common])
        assert vit.startswith(f"error: vit_tiny12_test is a ViT, and {protocol} takes ResNets ")
        assert f"for a ViT use --protocol {VIT_PROTOCOL}" in vit and "\n" not in vit
    heads = _refusal(["--ckpt", "random:resnet18", "--num-heads", "8", *common])
    assert "--num-heads applies to the ViT protocols" in heads
    vit = ["--ckpt", "random:vit_tiny12_test", "--protocol", VIT_PROTOCOL]
    no_data = _refusal([*vit, "--device", "cpu", "--records", str(out)])
    assert "pass --data with a COCO directory" in no_data  # a ViT passes the family check
    wrong_model = _refusal([*vit, "--model", "mask-fpn", *common])
    assert wrong_model == (
        f"error: {VIT_PROTOCOL} builds a ViT detector: --model must be vit-mask-fpn, not mask-fpn"
    )
    engine = _refusal([*vit, "--engine", "detectron2", *common])
    assert f"not {VIT_PROTOCOL}; use --engine torchvision" in engine
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_resumed_vit_training_equals_uninterrupted(coco, tmp_path):
    """AdamW, drop path and the DETR augmentation's draws all resume exactly."""
    import torch

    from evaluate.features import load_encoder
    from transfer.detection import train as detection_train

    protocol = dataclasses.replace(
        PROTOCOLS[VIT_PROTOCOL](),
        train_sizes=(32,),
        test_size=32,
        batch_size=1,
        roi_batch_per_image=8,
        warmup_iters=0,
        base_lr=1e-3,
    )
    images, _ = detection.load_datasets(protocol, str(coco))
    export = make_vit_export(tmp_path / "export")

    def fresh_detector():
        encoder, metadata = load_encoder(str(export))
        torch.manual_seed(0)
        return detection.build_loaded_detector(encoder, metadata, protocol, 2)[0]

    def settings(run_dir, stop):
        return detection_train.RunSettings(
            run_dir, {"run": 1}, torch.device("cpu"), seed=2, num_workers=0, max_iters=stop
        )

    torch.manual_seed(5)
    straight = fresh_detector()
    detection_train.train(straight, images, protocol, settings(tmp_path / "a", 3))
    torch.manual_seed(5)
    detection_train.train(fresh_detector(), images, protocol, settings(tmp_path / "b", 2))
    torch.manual_seed(123)
    resumed = fresh_detector()
    summary = detection_train.train(resumed, images, protocol, settings(tmp_path / "b", 3))
    assert summary["resumed_from"] == 2 and summary["iterations_run"] == 1
    expected, got = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    initial = fresh_detector().state_dict()
    assert any(not torch.equal(expected[k], initial[k]) for k in expected)
