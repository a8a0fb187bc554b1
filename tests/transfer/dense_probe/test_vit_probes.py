"""The frozen dense probes on a ViT: the patch-grid maps against the encoder's own tokens and
DINOv2's choices (normed patches for segmentation; [patch, CLS] before the final norm for depth),
the cache keeping ResNet and ViT maps apart, both CLIs end to end, and a view the patches do not
divide refused before anything is written."""

import numpy as np
import pytest
import torch

from evaluate.features import load_encoder
from pretrain.vit import build_vit
from results.record import read_records
from results.tables import build_tables
from tests.transfer.depth.layouts import pattern_images, write_labelled_mat
from tests.transfer.segmentation.layouts import make_voc
from transfer.dense_probe.features import DenseView, cached_dense_features
from transfer.dense_probe.maps import (
    conv5_map,
    feature_map_for,
    vit_patch_cls_map,
    vit_patch_map,
    vit_raw_patch_map,
)
from transfer.depth import cli as depth_cli
from transfer.segmentation import cli as segmentation_cli
from transfer.segmentation.data import build_segmentation_set

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
VIT = "random:vit_tiny_test"  # patch 4, 32-d, 4 blocks, [CLS] and final norm
SEG = ["--device", "cpu", "--num-workers", "0", "--epochs", "2", "--batch-size", "2"]


def last_block_tokens(encoder, images) -> torch.Tensor:
    """The last block's output [B, 1 + N, D] as a forward hook sees it (before the final norm)."""
    seen = []
    handle = encoder.blocks[-1].register_forward_hook(lambda _m, _i, out: seen.append(out))
    encoder.forward_features(images)
    handle.remove()
    return seen[0]


@torch.no_grad()
def test_segmentation_map_is_the_normed_patch_tokens_on_the_patch_grid():
    encoder, _ = load_encoder(VIT)
    images = torch.randn(2, 3, 32, 48)
    grid = vit_patch_map(encoder, images)
    assert grid.shape == (2, 32, 32 // 4, 48 // 4)  # stride = the patch size
    tokens = encoder.patch_tokens(images)  # [B, N, D], row-major over the 8 x 12 grid
    for row, col in [(0, 0), (0, 11), (3, 5), (7, 11)]:
        assert torch.equal(grid[:, :, row, col], tokens[:, row * 12 + col])
    raw = last_block_tokens(encoder, images)[:, 1:]
    assert torch.allclose(tokens, encoder.norm(raw), atol=1e-6)  # DINOv2: norm=True
    assert not torch.allclose(tokens, raw, atol=1e-3)


@torch.no_grad()
def test_depth_map_is_each_raw_patch_token_with_the_cls_token():
    """DINOv2 hub/depthers.py "lin. 1": get_intermediate_layers(norm=False,
    return_class_token=True), the head concatenating [patch, CLS] (2 x embed_dim channels)."""
    encoder, _ = load_encoder(VIT)
    images = torch.randn(2, 3, 32, 40)
    grid = vit_patch_cls_map(encoder, images)
    assert grid.shape == (2, 64, 8, 10)
    raw = last_block_tokens(encoder, images)  # [B, 1 + 80, 32], no final norm
    for row, col in [(0, 0), (2, 9), (7, 3)]:
        assert torch.allclose(grid[:, :32, row, col], raw[:, 1 + row * 10 + col], atol=1e-6)
        assert torch.allclose(grid[:, 32:, row, col], raw[:, 0], atol=1e-6)
    assert torch.allclose(grid[:, :32], vit_raw_patch_map(encoder, images), atol=1e-6)


def test_each_encoder_gets_its_protocols_map():
    resnet, _ = load_encoder("random:resnet18")
    vit, _ = load_encoder(VIT)
    selfpatch_vit, _ = build_vit("vit_tiny_test", cls_token=False, final_norm=False)
    assert feature_map_for(resnet, "normed-patches") is conv5_map
    assert feature_map_for(resnet, "patches+cls") is conv5_map
    assert feature_map_for(vit, "normed-patches") is vit_patch_map
    assert feature_map_for(vit, "patches+cls") is vit_patch_cls_map
    assert feature_map_for(selfpatch_vit, "patches+cls") is vit_raw_patch_map  # no [CLS]
    with pytest.raises(ValueError):
        feature_map_for(vit, "cls")


def test_resnet_and_vit_maps_never_share_a_cache_entry(tmp_path):
    """The key names the map: even under one weights hash the two are kept apart."""
    voc = make_voc(tmp_path, train=2, val=1)
    images = build_segmentation_set("voc2012", str(voc), "train")
    view, cache = DenseView(32, MEAN, STD), tmp_path / "cache"
    resnet, _ = load_encoder("random:resnet18")
    vit, _ = load_encoder(VIT)
    conv5 = cached_dense_features(resnet, "same", images, view, cache_dir=cache)
    patches = cached_dense_features(
        vit, "same", images, view, feature_map=vit_patch_map, cache_dir=cache
    )
    assert conv5.features.shape == (2, 512, 1, 1) and patches.features.shape == (2, 32, 8, 8)
    assert len(list(cache.glob("*.json"))) == 2
    assert patches.key["feature_map"] == "vit_patch_map" != conv5.key["feature_map"]
    again = cached_dense_features(  # read back: the ViT's entry, not the ResNet's
        resnet, "same", images, view, feature_map=vit_patch_map, cache_dir=cache
    )
    assert np.array_equal(again.features, patches.features)


def test_vit_segmentation_probe_end_to_end(tmp_path):
    voc = make_voc(tmp_path, train=5, val=2)
    records = tmp_path / "records"
    segmentation_cli.main(
        [
            *["--protocol", "frozen-linear-seg/1", "--ckpt", VIT, "--data", str(voc), *SEG],
            *["--crop", "32", "--lrs", "0.001", "0.01", "--heldout", "2"],
            *["--records", str(records), "--cache-dir", str(tmp_path / "cache")],
        ]
    )
    (record,) = read_records(records)
    assert record.status == "complete" and record.checkpoint.arch == "vit_tiny_test"
    assert record.task.protocol == "frozen-linear-seg/1"
    selection = record.selection
    assert selection["feature_map"] == "vit_patch_map"
    assert selection["feature_shape"] == [32, 8, 8]  # 32 px view, 4 px patches
    assert all(c["heldout_miou"] is not None for c in selection["candidates"])
    assert 0 <= record.metrics["miou"] <= 100
    settings = record.config["settings"]
    assert (settings["backbone"], settings["vit_tokens"]) == ("any", "normed-patches")


@pytest.fixture(scope="module")
def nyu_labelled(tmp_path_factory):
    """A labelled .mat of 6 images 48x64 (train 1-4, test 5-6)."""
    images, depths = pattern_images(6, height=48, width=64)
    root = tmp_path_factory.mktemp("nyu") / "labelled"
    return write_labelled_mat(root, images, depths, range(1, 5), range(5, 7)).parent


def test_vit_depth_probe_end_to_end(nyu_labelled, tmp_path):
    records = tmp_path / "records"
    argv = ["--protocol", "frozen-linear-depth/1", "--train-source", "labelled"]
    argv += ["--data", str(nyu_labelled), "--view-size", "36", "--epochs", "2", "--lrs", "0.005"]
    argv += ["--batch-size", "2", "--device", "cpu", "--num-workers", "0", "--ckpt", VIT]
    depth_cli.main([*argv, "--records", str(records), "--cache-dir", str(tmp_path / "cache")])
    (record,) = read_records(records)
    assert record.status == "complete" and record.checkpoint.arch == "vit_tiny_test"
    assert record.task.protocol == "frozen-linear-depth-labelled795-custom/1"
    selection = record.selection
    assert selection["feature_map"] == "vit_patch_cls_map"
    assert selection["feature_shape"] == [64, 9, 12]  # 48x64 -> 36x48 view, 4 px patches
    assert selection["view"].startswith("dense-whole/1:size=36")
    assert np.isfinite(record.metrics["rms"]) and record.metrics["rms"] > 0
    (dense,) = [t for t in build_tables(read_records(records)) if t.id == "dense"]
    assert "depth nyu-v2 test rms ↓ [frozen-linear-depth-labelled795-custom/1]" in dense.headers


def test_a_view_the_patches_do_not_divide_is_one_sentence_before_any_output(nyu_labelled, tmp_path):
    voc = make_voc(tmp_path / "data", train=2, val=1)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        segmentation_cli.main(
            [
                *["--protocol", "frozen-linear-seg/1", "--ckpt", VIT, "--data", str(voc), *SEG],
                *["--crop", "30", "--records", str(out), "--cache-dir", str(out)],
            ]
        )
    assert str(stop.value.code) == (
        "error: frozen-linear-seg/1's view of voc2012/train_aug is 30x30 px, which "
        "vit_tiny_test's 4 px patches do not divide; pass --crop with a size that makes both "
        "sides multiples of 4"
    )
    argv = ["--protocol", "frozen-linear-depth/1", "--train-source", "labelled", "--ckpt", VIT]
    argv += ["--data", str(nyu_labelled), "--view-size", "32", "--device", "cpu"]
    with pytest.raises(SystemExit) as stop:  # 48x64 -> 32x43 (42.67 rounded)
        depth_cli.main([*argv, "--records", str(out), "--cache-dir", str(out)])
    assert str(stop.value.code).startswith(
        "error: frozen-linear-depth-labelled795-custom/1's view of nyu-labelled/train is "
        "32x43 px, which vit_tiny_test's 4 px patches do not divide; pass --view-size"
    )
    assert not out.exists()
