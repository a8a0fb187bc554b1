"""ViT exports through the same --ckpt path as ResNets: metadata, rebuild, linear --fast, kNN,
semi-supervised fine-tuning, training checkpoints and random:<arch>."""

import dataclasses

import pytest
import torch

from evaluate import semisup
from evaluate.dino_linear import FEATURE_KIND, DinoLinearFeatures
from evaluate.features import extract_features, load_encoder
from evaluate.harness import checkpoint_mean_std
from evaluate.splits import train_and_eval_sets
from evaluate.transforms import Preprocessing
from pretrain.backbones import build_backbone
from pretrain.checkpoint import export_backbone, save_checkpoint
from pretrain.export_metadata import backbone_metadata
from pretrain.presets import tiny_vit_cpu
from results.record import read_records
from tests.conftest import run_cli
from tests.evaluate.conftest import only_record

SYNTHETIC = ("--dataset", "synthetic", "--num-workers", "0")


def vit_config(method: str) -> dict:
    """A tiny ViT run's config as a dict (tiny_vit_cpu: vit_tiny_test at 32 px, synthetic)."""
    return dataclasses.asdict(dataclasses.replace(tiny_vit_cpu(method), dataset="synthetic"))


def write_vit_export(run_dir, method: str, seed: int = 0):
    """A tiny ViT export written as pretrain/export_metadata.py:export_run writes one."""
    config = vit_config(method)
    torch.manual_seed(seed)
    encoder, dim = build_backbone(
        config["backbone"], cls_token=config["cls_token"], final_norm=config["final_norm"]
    )
    metadata = backbone_metadata(config, label=f"tiny-{method}", step=20, steps_per_epoch=5)
    metadata["feature_dim"] = dim
    return export_backbone(run_dir, encoder.state_dict(), metadata), encoder.eval()


@pytest.fixture(scope="module")
def dino_export(tmp_path_factory):
    return write_vit_export(tmp_path_factory.mktemp("vit-dino") / "run", "dino")[0]


def test_vit_metadata_records_the_architecture_and_its_flags():
    metadata = backbone_metadata(vit_config("selfpatch"), label="x", step=10, steps_per_epoch=5)
    assert metadata["arch"] == "vit_tiny_test" and metadata["patch_size"] == 4
    assert (metadata["cls_token"], metadata["final_norm"]) == (False, False)
    assert metadata["method"] == "selfpatch" and metadata["pretrain_epochs"] == 2
    assert metadata["preprocessing"]["image_size"] == 32
    # a config written before the ViT fields existed: BYOL, [CLS] and norm on
    old = {k: v for k, v in vit_config("byol").items() if k not in ("method", "cls_token")}
    old.pop("final_norm")
    metadata = backbone_metadata(old, label="x", step=10, steps_per_epoch=5)
    assert (metadata["method"], metadata["cls_token"], metadata["final_norm"]) == (
        "byol",
        True,
        True,
    )
    resnet = backbone_metadata(
        {**vit_config("byol"), "backbone": "resnet18"}, label="x", step=1, steps_per_epoch=1
    )
    assert "patch_size" not in resnet and "cls_token" not in resnet


@pytest.mark.parametrize("method", ["dino", "selfpatch"])
def test_an_export_rebuilds_the_same_vit(tmp_path, method):
    path, original = write_vit_export(tmp_path / "run", method)
    encoder, metadata = load_encoder(str(path))
    assert metadata["arch"] == "vit_tiny_test" and metadata["feature_dim"] == 32
    assert metadata["cls_token"] is (method == "dino") and metadata["patch_size"] == 4
    assert encoder.has_cls_token is (method == "dino")
    assert encoder.has_final_norm is (method == "dino")
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder(images), original(images), rtol=0, atol=0)


def test_a_training_checkpoint_of_a_vit_run_rebuilds_its_teacher(tmp_path):
    """SelfPatch (like DINO) is evaluated with its teacher: the checkpoint's target_encoder.*"""
    config = vit_config("selfpatch")
    teacher, _ = build_backbone("vit_tiny_test", cls_token=False, final_norm=False)
    student, _ = build_backbone("vit_tiny_test", cls_token=False, final_norm=False)
    model = {
        **{f"online_encoder.{k}": v for k, v in student.state_dict().items()},
        **{f"target_encoder.{k}": v for k, v in teacher.state_dict().items()},
    }
    state = {"model": model, "config": config, "step": 10, "epoch": 2, "sampler": {}}
    path = save_checkpoint(tmp_path / "run", state)
    encoder, metadata = load_encoder(str(path))
    assert (metadata["method"], metadata["cls_token"], metadata["final_norm"]) == (
        "selfpatch",
        False,
        False,
    )
    assert "cls_token" not in encoder.state_dict() and "norm.weight" not in encoder.state_dict()
    assert all(torch.equal(encoder.state_dict()[k], v) for k, v in teacher.state_dict().items())
    assert not torch.equal(encoder.state_dict()["pos_embed"], student.state_dict()["pos_embed"])


def test_random_init_of_a_vit():
    encoder, metadata = load_encoder("random:vit_tiny_test", seed=3)
    assert (metadata["arch"], metadata["patch_size"], metadata["feature_dim"]) == (
        "vit_tiny_test",
        4,
        32,
    )
    torch.manual_seed(3)
    expected, _ = build_backbone("vit_tiny_test")
    assert (
        metadata["weights_sha256"]
        == load_encoder("random:vit_tiny_test", seed=3)[1]["weights_sha256"]
    )
    assert all(torch.equal(encoder.state_dict()[k], v) for k, v in expected.state_dict().items())


def test_vit_export_through_linear_fast_and_knn_end_to_end(dino_export, tmp_path):
    """`python -m evaluate.linear --fast` and `python -m evaluate.knn` on a tiny ViT export."""
    linear_records, knn_records = tmp_path / "linear", tmp_path / "knn"
    result = run_cli(
        "evaluate.linear",
        "--ckpt",
        str(dino_export),
        *SYNTHETIC,
        "--fast",
        "--records",
        str(linear_records),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = only_record(linear_records)
    assert record.task.protocol == "cached-centercrop/2"
    assert (record.checkpoint.arch, record.checkpoint.method) == ("vit_tiny_test", "dino")
    assert dino_export.name == f"backbone-{record.checkpoint.weights_sha256[:8]}.pt"
    assert 0 <= record.metrics["top1"] <= 100
    result = run_cli(
        "evaluate.knn", "--ckpt", str(dino_export), *SYNTHETIC, "--records", str(knn_records)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = only_record(knn_records)
    assert record.task.family == "knn" and record.checkpoint.arch == "vit_tiny_test"
    assert set(record.selection["per_k"]) == {"10", "20", "100", "200"}


def test_vit_export_through_semisup_fine_tuning(tmp_path):
    path, _ = write_vit_export(tmp_path / "run", "selfpatch")
    records = tmp_path / "records"
    grid = ("--lrs", "0.1", "--epochs", "1", "--fraction", "10", "--batch-size", "16")
    semisup.main(["--ckpt", str(path), *SYNTHETIC, *grid, "--records", str(records)])
    (record,) = read_records(records)
    assert record.status == "complete" and record.task.family == "semisup"
    assert record.checkpoint.arch == "vit_tiny_test"
    assert [c["steps"] for c in record.selection["candidates"]] == [4]


def cached_feature_files(cache_dir, kind):
    """The feature-cache files whose key names the feature `kind`."""
    blobs = [torch.load(path, weights_only=True) for path in sorted(cache_dir.glob("*.pt"))]
    return [blob for blob in blobs if blob["key"].get("features") == kind]


def test_dino_vit_linear_variant_end_to_end(dino_export, tmp_path, feature_cache):
    """`evaluate.linear --dino-vit`: DINO eval_linear.py's feature (normed [CLS] of the last 4
    blocks), under its own protocol names, with --fast and on the paper's augmented path."""
    fast_records, paper_records = tmp_path / "fast", tmp_path / "paper"
    fast = ("--fast", "--dino-vit", "--records", str(fast_records))
    result = run_cli("evaluate.linear", "--ckpt", str(dino_export), *SYNTHETIC, *fast)
    assert result.returncode == 0, result.stderr[-3000:]
    record = only_record(fast_records)
    assert record.task.protocol == "cached-centercrop-dino-vit-last4/1"
    assert record.config["dino_vit"] is True and record.checkpoint.arch == "vit_tiny_test"
    assert "cached-centercrop-dino-vit-last4/1" in result.stdout
    # the features the probe read: DinoLinearFeatures of the export, [N, 4 x 32]
    encoder, metadata = load_encoder(str(dino_export))
    (test_blob,) = [
        blob
        for blob in cached_feature_files(feature_cache, FEATURE_KIND)
        if blob["key"]["split"] == "test"
    ]
    _, test_set, _ = train_and_eval_sets("synthetic", None)
    preprocessing = Preprocessing(32, *checkpoint_mean_std(metadata))
    expected, _ = extract_features(
        DinoLinearFeatures(encoder), preprocessing.eval_dataset(test_set)
    )
    assert expected.shape == (len(test_set), 128)
    torch.testing.assert_close(test_blob["features"], expected)
    paper = ("--dino-vit", "--epochs", "1", "--batch-size", "128", "--records", str(paper_records))
    result = run_cli("evaluate.linear", "--ckpt", str(dino_export), *SYNTHETIC, *paper)
    assert result.returncode == 0, result.stderr[-3000:]
    assert only_record(paper_records).task.protocol == "byol-paper-dino-vit-last4/1"


def test_dino_vit_variant_refuses_a_resnet_and_a_vit_without_cls(tmp_path):
    records = ("--records", str(tmp_path))
    result = run_cli(
        "evaluate.linear", "--ckpt", "random:resnet18", *SYNTHETIC, "--fast", "--dino-vit", *records
    )
    assert result.returncode == 1
    assert "but resnet18 is a ResNet: drop --dino-vit" in result.stderr
    assert not list(tmp_path.glob("**/*.json"))  # refused before any work: no record
    path, _ = write_vit_export(tmp_path / "run", "selfpatch")
    result = run_cli(
        "evaluate.linear", "--ckpt", str(path), *SYNTHETIC, "--fast", "--dino-vit", *records
    )
    assert result.returncode == 1 and "has none (cls_token false" in result.stderr
