"""A dense protocol refuses the other backbone family with one sentence, before writing anything:
the ResNet protocols of the torchvision detection/segmentation/depth engines and the detectron2
and mmseg exports refuse a ViT; the frozen dense probes take either family."""

import importlib

import pytest

from pretrain.backbones import dense_backbone_problem, external_engine_problem

VIT = "random:vit_tiny_test"


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("transfer.export", ["detectron2"]),
        ("transfer.export", ["mmseg"]),
        ("transfer.detection.cli", ["--data", "{missing}"]),
        ("transfer.segmentation.cli", ["--data", "{missing}"]),
        ("transfer.depth.cli", ["--data", "{missing}"]),
    ],
)
def test_dense_evaluations_refuse_a_vit(module, args, tmp_path, capsys):
    argv = [arg.format(missing=tmp_path / "no-data") for arg in args] + ["--ckpt", VIT]
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as stop:
        main(argv)
    message = str(stop.value.code)
    assert message.startswith("error: vit_tiny_test is a ViT, and ")
    assert "takes ResNets only; " in message and "\n" not in message
    assert not list(tmp_path.iterdir())  # refused before any output


def test_fine_tuned_depth_names_the_probe_for_a_vit(tmp_path):
    with pytest.raises(SystemExit) as stop:
        importlib.import_module("transfer.depth.cli").main(["--ckpt", VIT, "--data", str(tmp_path)])
    assert str(stop.value.code) == (
        "error: vit_tiny_test is a ViT, and byol-paper-depth/1 takes ResNets only; for a ViT "
        "use --protocol frozen-linear-depth/1 (the frozen linear probe)"
    )


@pytest.mark.parametrize(
    ("module", "protocol"),
    [
        ("transfer.segmentation.cli", "frozen-linear-seg/1"),
        ("transfer.segmentation.cli", "frozen-linear-seg-ade20k/1"),
        ("transfer.depth.cli", "frozen-linear-depth/1"),
    ],
)
def test_the_frozen_probes_take_a_vit(module, protocol, tmp_path):
    """Past the family check: the next sentence is about the missing data."""
    argv = ["--protocol", protocol, "--data", str(tmp_path / "no-data"), "--ckpt", VIT]
    if module == "transfer.depth.cli":
        argv += ["--train-source", "labelled"]
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(module).main(argv)
    message = str(stop.value.code)
    assert message.startswith("error: ") and "ViT" not in message and "no-data" in message
    assert not list(tmp_path.iterdir())


def test_the_sentence_is_for_vits_only():
    assert external_engine_problem({"arch": "resnet50"}) is None
    assert "takes ResNets only" in external_engine_problem({"arch": "vit_small_patch16"})


def test_the_refusal_names_the_family_both_ways():
    vit, resnet = {"arch": "vit_small_patch16"}, {"arch": "resnet50"}
    assert dense_backbone_problem(vit, "p/1", "any", "x") is None
    assert dense_backbone_problem(vit, "p/1", "vit", "x") is None
    assert dense_backbone_problem(resnet, "p/1", "resnet", "x") is None
    message = dense_backbone_problem(resnet, "p/1", "vit", "use y")
    assert message == "resnet50 is a ResNet, and p/1 takes ViTs only; use y"
    with pytest.raises(ValueError):
        dense_backbone_problem(resnet, "p/1", "convnets", "x")
