"""Bad input gives a clear error and loses nothing (issue: pretraining core, "bad input")."""

import json

import pytest
import torch

from pretrain.checkpoint import load_checkpoint
from pretrain.data import DataError
from pretrain.dist import DistInfo
from pretrain.rundir import ConfigMismatchError, NonFiniteLossError
from pretrain.train import prepare_run_dir, train
from tests.conftest import run_cli
from tests.image_folders import make_image_folder


def test_missing_data_dir_is_a_clear_cli_error(tmp_path):
    result = run_cli(
        "pretrain.launch",
        "--preset",
        "tiny_cpu",
        "--dataset",
        "folder",
        "--data",
        str(tmp_path / "nowhere"),
        "--run-dir",
        str(tmp_path / "run"),
    )
    assert result.returncode != 0
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_empty_data_dir(tmp_path, tiny_config):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty|no class"):
        train(tiny_config(dataset="folder", data=str(tmp_path / "empty")), tmp_path / "run", "cpu")


def test_corrupt_image_names_the_file_and_keeps_the_last_checkpoint(tmp_path, tiny_config):
    root = make_image_folder(tmp_path / "data", classes=("a", "b"), per_class=20, size=24)
    broken = sorted((root / "a").iterdir())[7]
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    config = tiny_config(
        dataset="folder",
        data=str(tmp_path / "data"),
        train_subset_per_class=None,
        batch_size=8,
        epochs=2,
    )
    with pytest.raises(DataError, match=broken.name):
        train(config, tmp_path / "run", "cpu")
    checkpoints = list((tmp_path / "run" / "checkpoints").glob("*.pt"))
    for path in checkpoints:  # whatever was saved before the bad image is intact
        assert load_checkpoint(path)["step"] >= 0


def test_non_finite_loss_stops_with_step_and_lr_and_keeps_a_good_checkpoint(tmp_path, tiny_config):
    config = tiny_config(base_lr=1e30, warmup_epochs=0)
    with pytest.raises(NonFiniteLossError, match=r"step \d+ \(lr [0-9.e+]+") as error:
        train(config, tmp_path / "run", "cpu")
    assert "last good checkpoint" in str(error.value)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    if last.exists():  # a checkpoint written before the blow-up holds only finite weights
        state = load_checkpoint(last)
        assert all(
            torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point()
        )


def test_unknown_backbone_lists_known_names(tmp_path):
    result = run_cli(
        "pretrain.launch",
        "--preset",
        "tiny_cpu",
        "--backbone",
        "resnet51",
        "--run-dir",
        str(tmp_path / "run"),
    )
    assert result.returncode != 0
    assert "resnet51" in result.stderr and "resnet50x2" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_preset_and_dataset(tmp_path):
    result = run_cli("pretrain.launch", "--preset", "nope", "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "tiny_cpu" in result.stderr
    result = run_cli(
        "pretrain.launch",
        "--preset",
        "tiny_cpu",
        "--dataset",
        "mnist3d",
        "--run-dir",
        str(tmp_path / "run"),
    )
    assert result.returncode != 0 and "fmnist" in result.stderr


def test_a_different_config_in_the_same_run_dir_is_refused(tmp_path, tiny_config):
    run_dir = tmp_path / "run"
    train(tiny_config(max_steps=1), run_dir, "cpu")
    saved = json.loads((run_dir / "config.json").read_text())
    with pytest.raises(ConfigMismatchError, match="base_lr: run has 0.2, now 0.5"):
        train(tiny_config(max_steps=1, base_lr=0.5), run_dir, "cpu")
    assert json.loads((run_dir / "config.json").read_text()) == saved
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == 1


def test_only_rank_zero_reads_and_writes_the_run_config(tmp_path, tiny_config):
    """Regression (CI, SLURM DDP test): rank 1 read config.json while rank 0 was writing it."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text('{"backbone": "res')  # rank 0 is halfway through it
    assert prepare_run_dir(run_dir, tiny_config(), DistInfo(rank=1, world_size=2)) == run_dir

    fresh = tmp_path / "fresh"
    prepare_run_dir(fresh, tiny_config(), DistInfo(rank=1, world_size=2))
    assert not fresh.exists()  # rank 1 never creates it
    prepare_run_dir(fresh, tiny_config(), DistInfo())
    assert json.loads((fresh / "config.json").read_text())["backbone"] == tiny_config().backbone
    assert [path.name for path in fresh.iterdir()] == ["config.json"]  # no temporary file left
