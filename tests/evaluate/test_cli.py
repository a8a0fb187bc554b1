"""The evaluation CLIs end to end on a tiny pretraining run, and their answers to bad input."""

import hashlib

import pytest
import torch

from evaluate import knn, linear
from pretrain.checkpoint import load_checkpoint, save_checkpoint
from results.record import read_records
from tests.conftest import run_cli
from tests.image_folders import make_image_folder

FAST = ("--dataset", "synthetic", "--fast", "--num-workers", "0")


def only_record(records_dir):
    (record,) = read_records(records_dir)  # validated on read
    assert record.status == "complete" and record.kind == "eval"
    return record


def test_contract_quick_check_linear_fast(tiny_export, tmp_path):
    """`python -m evaluate.linear --ckpt DIR/exports/backbone-*.pt --dataset synthetic --fast`."""
    records = ("--records", str(tmp_path))
    result = run_cli("evaluate.linear", "--ckpt", str(tiny_export), *FAST, *records)
    assert result.returncode == 0, result.stderr[-3000:]
    record = only_record(tmp_path)
    assert (record.task.family, record.task.protocol) == ("linear", "cached-centercrop/1")
    assert (record.task.dataset, record.task.split) == ("synthetic", "test")
    assert tiny_export.name == f"backbone-{record.checkpoint.weights_sha256[:8]}.pt"
    assert record.checkpoint.method == "byol" and record.checkpoint.arch == "resnet18"
    selection = record.selection
    assert [c["lr"] for c in selection["candidates"]] == [0.4, 0.3, 0.2, 0.1, 0.05]
    assert selection["lr"] in [0.4, 0.3, 0.2, 0.1, 0.05] and selection["chosen_on"] == "heldout-50"
    with open(selection["heldout_split_file"], "rb") as split_file:
        assert hashlib.sha256(split_file.read()).hexdigest() == selection["heldout_split_sha256"]
    assert record.provenance.wall_seconds > 0 and record.config["fast"] is True
    assert f"top1 {record.metrics['top1']:.2f}" in result.stdout


def test_contract_quick_check_knn(tiny_export, tmp_path):
    result = run_cli("evaluate.knn", "--ckpt", str(tiny_export), *FAST, "--records", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    record = only_record(tmp_path)
    assert (record.task.family, record.task.protocol) == ("knn", "knn-cosine-t0.07/1")
    assert set(record.selection["per_k"]) == {"10", "20", "100", "200"}
    assert record.metrics == record.selection["per_k"]["200"]
    assert "knn knn-cosine-t0.07/1 k=200" in result.stdout


def test_paper_protocol_end_to_end(tiny_export, tmp_path):
    result = run_cli(
        "evaluate.linear", "--ckpt", str(tiny_export), "--dataset", "synthetic",
        "--epochs", "1", "--batch-size", "128", "--num-workers", "0", "--records", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    record = only_record(tmp_path)
    assert record.task.protocol == "byol-paper/1" and record.config["epochs"] == 1
    lr_scaled = [c["lr_scaled"] for c in record.selection["candidates"]]
    assert lr_scaled == pytest.approx([lr * 128 / 1024 for lr in (0.4, 0.3, 0.2, 0.1, 0.05)])


def test_random_init_baseline_and_default_records_dir(tiny_run, tmp_path):
    linear.main(["--ckpt", "random:resnet18", *FAST, "--epochs", "5", "--records", str(tmp_path)])
    record = only_record(tmp_path)
    assert record.checkpoint.label == "random-init resnet18"
    assert record.checkpoint.method == "random-init" and record.checkpoint.pretrain_epochs == 0
    knn.main(["--ckpt", str(tiny_run / "checkpoints" / "last.pt"), *FAST])  # no --records
    beside_run = read_records(tiny_run.parent / "records")  # records/ beside the run dir
    (beside,) = [record for record in beside_run if record.kind == "eval"]  # + the pretrain one
    assert beside.checkpoint.label == tiny_run.name and beside.task.family == "knn"


def test_a_failing_run_still_ends_in_one_record(tmp_path, monkeypatch):
    def broken(*_args):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(linear, "run_probe", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        linear.main(["--ckpt", "random:resnet18", *FAST, "--records", str(tmp_path)])
    (record,) = read_records(tmp_path)
    assert record.status == "failed" and record.error == "RuntimeError: out of memory"
    assert record.metrics == {} and record.task.protocol == "cached-centercrop/1"


def test_missing_checkpoint_is_a_clear_cli_error(tmp_path):
    missing = tmp_path / "exports" / "backbone-00000000.pt"
    result = run_cli("evaluate.linear", "--ckpt", str(missing), *FAST, "--records", str(tmp_path))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"error: checkpoint {missing} does not exist" in result.stderr


def expect_error(main, argv, *fragments):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and all(f in message for f in fragments), message


@pytest.mark.parametrize("main", [linear.main, knn.main])
def test_corrupt_checkpoint(tiny_export, tmp_path, main):
    corrupt = tmp_path / tiny_export.name
    corrupt.write_bytes(tiny_export.read_bytes()[: tiny_export.stat().st_size // 2])
    expect_error(main, ["--ckpt", str(corrupt), *FAST], str(corrupt), "cannot be read")
    assert not (tmp_path / "records").exists()


def test_data_dir_without_classes(tmp_path):
    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "data" / "val").mkdir()
    argv = ["--ckpt", "random:resnet18", "--dataset", "folder", "--data", str(tmp_path / "data")]
    expect_error(linear.main, [*argv, "--fast"], "no class sub-directories")
    imagenet = ["--ckpt", "random:resnet18", "--dataset", "imagenet", "--data", str(tmp_path)]
    expect_error(knn.main, imagenet, "does not exist")


def test_class_count_mismatch(tiny_run, tmp_path):
    make_image_folder(tmp_path / "data" / "train")
    make_image_folder(tmp_path / "data" / "val", classes=("a", "b", "other"))
    argv = ["--ckpt", "random:resnet18", "--dataset", "folder", "--data", str(tmp_path / "data")]
    expect_error(linear.main, argv, "val split has 3 classes", "only in val: ['other']")
    # A checkpoint pretrained on "imagenet" with 10 classes meets an "imagenet" with 3.
    state = load_checkpoint(tiny_run / "checkpoints" / "last.pt")
    state["config"] = {**state["config"], "dataset": "imagenet"}
    assert state["probe"]["weight"].shape[0] == 10
    path = save_checkpoint(tmp_path / "run", state)
    (tmp_path / "data" / "val" / "other").rename(tmp_path / "data" / "val" / "c")
    argv = ["--ckpt", str(path), "--dataset", "imagenet", "--data", str(tmp_path / "data")]
    expect_error(knn.main, argv, "pretrained on imagenet with 10 classes", "has 3")
    assert torch.load(path, weights_only=True)  # the file itself is fine
