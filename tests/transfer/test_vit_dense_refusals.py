"""Every dense evaluation refuses a ViT with one sentence until issue 19 (ViT dense evaluation):
the torchvision detection/segmentation/depth engines, their frozen probes and the detectron2 and
mmseg exports."""

import importlib

import pytest

from pretrain.backbones import dense_vit_problem, external_engine_problem

VIT = "random:vit_tiny_test"


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("transfer.export", ["detectron2"]),
        ("transfer.export", ["mmseg"]),
        ("transfer.detection.cli", ["--data", "{missing}"]),
        ("transfer.segmentation.cli", ["--data", "{missing}"]),
        ("transfer.segmentation.cli", ["--protocol", "frozen-linear-seg/1", "--data", "{missing}"]),
        ("transfer.depth.cli", ["--data", "{missing}"]),
        ("transfer.depth.cli", ["--protocol", "frozen-linear-depth/1", "--data", "{missing}"]),
    ],
)
def test_dense_evaluations_refuse_a_vit(module, args, tmp_path, capsys):
    argv = [arg.format(missing=tmp_path / "no-data") for arg in args] + ["--ckpt", VIT]
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as stop:
        main(argv)
    message = str(stop.value.code)
    assert message.startswith("error: vit_tiny_test is a ViT")
    assert "ViT dense evaluation is issue 19" in message and "\n" not in message
    assert "transfer.classification" in message  # what it can be evaluated with
    assert not list(tmp_path.iterdir())  # refused before any output


def test_the_sentence_is_for_vits_only():
    assert dense_vit_problem({"arch": "resnet50"}) is None
    assert external_engine_problem({"arch": "resnet50"}) is None
    assert "issue 19" in external_engine_problem({"arch": "vit_small_patch16"})
