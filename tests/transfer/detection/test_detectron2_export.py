"""detectron2 export: detectron2's ResNet key names and shapes, an exact round trip, the YAML of
moco-detectron2-c4-24k/1, and the `python -m transfer.export detectron2` command."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pretrain.backbones import build_backbone
from pretrain.checkpoint import export_backbone
from transfer import export
from transfer.detection import detectron2_export
from transfer.detection.protocols import SIZES_480_800

REPO = Path(__file__).resolve().parents[3]
NORM = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def detectron2_r50_shapes() -> dict[str, tuple[int, ...]]:
    """detectron2's ResNet-50 (BottleneckBlock, STRIDE_IN_1X1 False) names and shapes, written
    from detectron2/modeling/backbone/resnet.py: stem.conv1(.norm), res2..res5 blocks with conv1..3
    (.norm) and, in each stage's first block, shortcut(.norm)."""
    shapes = {"stem.conv1.weight": (64, 3, 7, 7)}
    shapes |= {f"stem.conv1.norm.{n}": (64,) if n != "num_batches_tracked" else () for n in NORM}
    in_channels = 64
    for stage, blocks in zip((2, 3, 4, 5), (3, 4, 6, 3)):
        width = 64 * 2 ** (stage - 2)
        for block in range(blocks):
            prefix = f"res{stage}.{block}"
            convs = {
                "conv1": (width, in_channels, 1, 1),
                "conv2": (width, width, 3, 3),
                "conv3": (4 * width, width, 1, 1),
            }
            if block == 0:
                convs["shortcut"] = (4 * width, in_channels, 1, 1)
            for name, shape in convs.items():
                shapes[f"{prefix}.{name}.weight"] = shape
                for n in NORM:
                    shapes[f"{prefix}.{name}.norm.{n}"] = (shape[0],) if n != NORM[-1] else ()
            in_channels = 4 * width
    return shapes


@pytest.fixture(scope="module")
def r50_export(tmp_path_factory):
    torch.manual_seed(0)
    encoder, _ = build_backbone("resnet50")
    for module in encoder.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.num_batches_tracked.fill_(3)
    metadata = {
        "label": "r50-test",
        "arch": "resnet50",
        "cifar_stem": False,
        "method": "byol",
        "preprocessing": {"image_size": 224, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.25]},
    }
    directory = tmp_path_factory.mktemp("r50")
    return export_backbone(directory, encoder.state_dict(), metadata), encoder.state_dict()


def test_keys_and_shapes_follow_detectron2_resnet_naming(r50_export, tmp_path):
    path, state_dict = r50_export
    weights, config = detectron2_export.export(str(path), tmp_path)
    with open(weights, "rb") as handle:
        checkpoint = pickle.load(handle)
    assert checkpoint["matching_heuristics"] is True and checkpoint["__author__"]
    model = checkpoint["model"]
    assert all(isinstance(value, np.ndarray) for value in model.values())
    expected = detectron2_r50_shapes()
    assert len(expected) == len(state_dict) == 318
    assert {name: value.shape for name, value in model.items()} == expected
    assert model["res3.0.conv2.weight"].shape == (128, 128, 3, 3)  # stride on the 3x3 conv


def test_mapping_back_gives_the_original_state_dict_exactly(r50_export, tmp_path):
    path, state_dict = r50_export
    weights, _ = detectron2_export.export(str(path), tmp_path)
    with open(weights, "rb") as handle:
        restored = detectron2_export.from_detectron2(pickle.load(handle))
    assert sorted(restored) == sorted(state_dict)
    for name, tensor in state_dict.items():
        assert restored[name].dtype == tensor.dtype and torch.equal(restored[name], tensor), name


def test_yaml_states_the_voc0712_c4_protocol(r50_export, tmp_path):
    path, _ = r50_export
    weights, config = detectron2_export.export(str(path), tmp_path)
    cfg = yaml.safe_load(config.read_text())
    assert cfg["MODEL"]["WEIGHTS"] == str(weights.resolve())
    assert cfg["MODEL"]["RESNETS"]["DEPTH"] == 50 and cfg["MODEL"]["RESNETS"]["NORM"] == "SyncBN"
    assert cfg["MODEL"]["RESNETS"]["STRIDE_IN_1X1"] is False
    assert cfg["MODEL"]["ROI_HEADS"] == {"NAME": "Res5ROIHeadsExtraNorm", "NUM_CLASSES": 20}
    assert cfg["MODEL"]["BACKBONE"]["FREEZE_AT"] == 0 and cfg["INPUT"]["FORMAT"] == "RGB"
    assert cfg["MODEL"]["PIXEL_MEAN"] == pytest.approx([127.5, 102.0, 76.5])  # checkpoint's
    assert eval(cfg["INPUT"]["MIN_SIZE_TRAIN"]) == SIZES_480_800  # yacs reads tuples as literals
    assert eval(cfg["DATASETS"]["TRAIN"]) == ("voc_2007_trainval", "voc_2012_trainval")
    solver = cfg["SOLVER"]
    assert (solver["IMS_PER_BATCH"], solver["BASE_LR"], solver["MAX_ITER"]) == (16, 0.02, 24000)
    assert eval(solver["STEPS"]) == (18000, 22000) and solver["WARMUP_ITERS"] == 100


def test_shipped_template_matches_the_generator():
    metadata = {"arch": "resnet50", "label": "<your backbone>", "weights_sha256": "<sha256>"}
    text = detectron2_export.detectron2_yaml(
        metadata, Path("<path to backbone-XXXXXXXX-detectron2.pkl>")
    )
    shipped = (
        REPO / "transfer" / "detection" / "configs" / "detectron2_voc0712_r50_c4_24k.yaml"
    ).read_text()
    assert shipped.split("\n", 1)[1] == text


def test_resnet18_exports_weights_but_no_c4_yaml(tmp_path):
    encoder, _ = build_backbone("resnet18")
    metadata = {"label": "r18", "arch": "resnet18", "cifar_stem": False}
    path = export_backbone(tmp_path, encoder.state_dict(), metadata)
    weights, config = detectron2_export.export(str(path), tmp_path / "out")
    assert weights.is_file() and "needs a bottleneck ResNet" in config
    with open(weights, "rb") as handle:
        model = pickle.load(handle)["model"]
    assert "res5.1.conv2.norm.weight" in model and "stem.conv1.weight" in model


def test_export_command_line(r50_export, tmp_path, capsys):
    path, _ = r50_export
    export.main(["detectron2", "--ckpt", str(path), "--out", str(tmp_path)])  # as python -m
    assert f"{path.stem}-detectron2.pkl" in capsys.readouterr().out
    assert (tmp_path / f"{path.stem}-voc0712-c4-24k.yaml").is_file()
    with pytest.raises(SystemExit) as usage:
        export.main(["caffe2"])
    assert usage.value.code == 2  # argparse: unknown engine
    with pytest.raises(SystemExit) as missing:
        export.main(["detectron2", "--ckpt", str(tmp_path / "nope.pt")])
    assert "nope.pt does not exist" in str(missing.value.code)


@pytest.mark.parametrize(
    ("extra", "words"),
    [({"padding": "tf-same"}, "tf-same padding"), ({"stem_padding": 2}, "stem padded by 2")],
)
def test_weights_that_need_our_padding_are_refused_by_both_engine_exports(tmp_path, extra, words):
    """The authors' release (TF SAME) and solo-learn's CIFAR stem: detectron2's and mmseg's
    ResNets would compute other features from them, so neither export writes anything."""
    encoder, _ = build_backbone("resnet50")
    metadata = {"label": "imported", "arch": "resnet50", "cifar_stem": False, **extra}
    path = export_backbone(tmp_path, encoder.state_dict(), metadata)
    for engine in ("detectron2", "mmseg"):
        with pytest.raises(SystemExit) as refused:
            export.main([engine, "--ckpt", str(path), "--out", str(tmp_path / engine)])
        assert str(refused.value.code).startswith("error: ") and words in str(refused.value.code)
        assert not (tmp_path / engine).exists() or not any((tmp_path / engine).iterdir())
