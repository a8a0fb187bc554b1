"""--log-to on the evaluation trainers: each run's log.jsonl step lines, and the same numbers in
TensorBoard event files (read back with tensorboard's reader) and an offline W&B run."""

import pytest

from results import runlog
from tests.conftest import run_cli
from tests.pretrain.test_log_sinks import wandb_records
from tests.transfer.depth.layouts import pattern_images, write_labelled_mat


def history_rows(run_dir):
    """{step: {key: value}} of the offline W&B run in run_dir/wandb."""
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    (data,) = offline.glob("run-*.wandb")
    rows = {}
    for record in wandb_records(data):
        if record.WhichOneof("record_type") == "history":
            items = record.history.item
            rows[record.history.step.num] = {
                item.key or "/".join(item.nested_key): item.value_json for item in items
            }
    return rows


def assert_sinks_match_the_log(run_dir, steps: list[int]):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    lines = runlog.step_lines(runlog.read_log(run_dir / "log.jsonl"))
    assert [line["step"] for line in lines] == steps
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    loss = [(event.step, event.value) for event in events.Scalars("step/loss")]
    assert loss == [(line["step"], pytest.approx(line["loss"], rel=1e-6)) for line in lines]
    assert "step/lr" in events.Tags()["scalars"]
    rows = history_rows(run_dir)
    assert sorted(rows) == steps
    for line in lines:
        assert float(rows[line["step"]]["step/loss"]) == pytest.approx(line["loss"])


def test_depth_run_logs_to_tensorboard_and_wandb(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    images, depths = pattern_images(8, height=96, width=128)
    write_labelled_mat(tmp_path / "nyu", images, depths, range(1, 5), range(5, 9))
    run = tmp_path / "run"
    argv = ["--ckpt", "random:resnet18", "--data", str(tmp_path / "nyu"), "--device", "cpu"]
    argv += ["--train-source", "labelled", "--crop", "32", "48", "--max-steps", "12"]
    argv += ["--batch-size", "2", "--num-workers", "0", "--records", str(tmp_path / "records")]
    run_cli(
        "transfer.depth", *argv, "--run-dir", str(run), "--log-to", "tensorboard,wandb", check=True
    )
    (run_dir,) = run.glob("lr*-seed0")
    assert_sinks_match_the_log(run_dir, [10, 12])  # every 10 steps and the last


def test_an_unknown_destination_is_one_sentence(tmp_path):
    result = run_cli("transfer.depth", "--ckpt", "random:resnet18", "--log-to", "mlflow")
    assert result.returncode == 1 and "--log-to takes tensorboard and wandb, not mlflow" in (
        result.stderr
    )


def test_fine_tuning_cells_log_to_tensorboard_and_wandb(tmp_path, monkeypatch):
    from evaluate import semisup

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    argv = ["--ckpt", "random:resnet18", "--dataset", "synthetic", "--fraction", "10"]
    argv += ["--batch-size", "16", "--num-workers", "0", "--lrs", "0.1", "--epochs", "3"]
    run = tmp_path / "run"
    semisup.main([*argv, "--records", str(tmp_path / "r"), "--run-dir", str(run)])
    semisup_cells = [path.parent for path in run.rglob("log.jsonl")]
    assert semisup_cells and not list(run.rglob("tensorboard"))  # log.jsonl always, sinks asked
    run = tmp_path / "logged"
    argv += ["--log-to", "tensorboard,wandb"]
    semisup.main([*argv, "--records", str(tmp_path / "r2"), "--run-dir", str(run)])
    for cell_dir in {path.parent for path in run.rglob("log.jsonl")}:
        assert_sinks_match_the_log(cell_dir, [10, 12])  # 4 steps per epoch x 3


def test_detection_logs_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tests.transfer.detection.layouts import make_voc
    from tests.transfer.detection.test_models import TINY

    voc = make_voc(tmp_path / "VOCdevkit", {("2007", "trainval"): 2, ("2007", "test"): 1})
    run = tmp_path / "run"
    argv = ["--ckpt", "random:resnet18", "--data", str(voc), "--run-dir", str(run), *TINY]
    argv += ["--batch-size", "2", "--max-steps", "2", "--records", str(tmp_path / "r")]
    run_cli("transfer.detection", *argv, "--log-to", "tensorboard", check=True)
    lines = runlog.step_lines(runlog.read_log(run / "log.jsonl"))
    assert [line["step"] for line in lines] == [2]  # every 20 iterations and the last
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [event.step for event in events.Scalars("step/loss_rpn_box_reg")] == [2]


def tensorboard_steps(run_dir, tag="step/loss") -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return [event.step for event in events.Scalars(tag)]


def logged_steps(run_dir) -> list[int]:
    return [line["step"] for line in runlog.step_lines(runlog.read_log(run_dir / "log.jsonl"))]


def test_segmentation_fine_tune_and_frozen_probe_log_to_tensorboard(tmp_path):
    from tests.transfer.segmentation.layouts import make_voc

    voc = make_voc(tmp_path, train=5, val=2)
    common = ["--ckpt", "random:resnet18", "--data", str(voc), "--device", "cpu"]
    common += ["--num-workers", "0", "--batch-size", "2", "--log-to", "tensorboard"]
    run = tmp_path / "fcn"
    argv = [*common, "--max-steps", "12", "--crop", "48", "--lrs", "0.01", "--seeds", "0"]
    run_cli(
        "transfer.segmentation",
        *argv,
        "--run-dir",
        str(run),
        "--records",
        str(run / "r"),
        check=True,
    )
    final = run / "final-lr0.01-seed0"
    assert logged_steps(final) == tensorboard_steps(final) == [10, 12]
    probe = tmp_path / "probe"
    argv = [*common, "--protocol", "frozen-linear-seg/1", "--epochs", "2", "--crop", "64"]
    argv += ["--lrs", "0.001", "0.01", "--heldout", "2", "--cache-dir", str(tmp_path / "c")]
    run_cli(
        "transfer.segmentation",
        *argv,
        "--run-dir",
        str(probe),
        "--records",
        str(probe / "r"),
        check=True,
    )
    # 3 sweep images (5 - 2 held out) and then all 5, batches of 2, 2 epochs: 4 and 6 steps
    assert logged_steps(probe / "sweep") == tensorboard_steps(probe / "sweep") == [4]
    assert logged_steps(probe / "final") == tensorboard_steps(probe / "final") == [6]


def test_linear_probe_logs_to_tensorboard_only_when_asked(tmp_path):
    argv = ["--ckpt", "random:resnet18", "--dataset", "synthetic", "--fast", "--epochs", "1"]
    argv += ["--lrs", "0.1", "--num-workers", "0", "--device", "cpu"]
    run_cli("evaluate.linear", *argv, "--records", str(tmp_path / "a" / "r"), check=True)
    assert not list((tmp_path / "a").rglob("log.jsonl"))
    argv += ["--log-to", "tensorboard", "--records", str(tmp_path / "b" / "r")]
    run_cli("evaluate.linear", *argv, check=True)
    logs = sorted(path.parent for path in (tmp_path / "b").rglob("log.jsonl"))
    assert [path.name for path in logs] == ["retrain-lr-0.1", "sweep"]
    for run_dir in logs:
        steps = logged_steps(run_dir)
        assert steps and steps == tensorboard_steps(run_dir)
