"""The command-line contract's quick check, end to end through the real CLI, and its flags."""

import json

import pytest
import torch

from pretrain import launch
from pretrain.backbones import build_backbone
from pretrain.checkpoint import load_checkpoint, weights_sha256
from results.errors import ByolBenchError
from results.record import read_records
from tests.conftest import run_quick_check


@pytest.mark.slow
def test_quick_check_leaves_checkpoint_export_and_log(tmp_path):
    run_dir = tmp_path / "run"
    result = run_quick_check(run_dir, 20)
    assert "export:" in result.stdout
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert state["step"] == 20
    torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)  # plain types only

    every = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    lines = [line for line in every if line.get("kind") != "step"]
    # 512 images / batch 16 = 32 steps per epoch: one partial-epoch line at the stop
    assert [(line["epoch"], line["step"]) for line in lines] == [(0.625, 20)]
    # a step line every log_every_steps (tiny_cpu: 1), the held-out probe on every 10th
    steps = [line for line in every if line.get("kind") == "step"]
    assert [line["step"] for line in steps] == list(range(1, 21))
    assert [line["images_seen"] for line in steps[:2]] == [16, 32]
    probed = [line["step"] for line in steps if "online_probe_heldout_top1" in line]
    assert probed == [10, 20] and all(0 <= line["loss"] <= 8 for line in steps)  # 2 x (2 - 2 cos)
    assert steps[-1]["lr"] == pytest.approx(lines[-1]["lr"])
    for key in (
        "loss",
        "lr",
        "tau",
        "online_probe_train_top1",
        "online_probe_test_top1",
        "img_per_s",
    ):
        assert key in lines[-1]

    (export,) = (run_dir / "exports").glob("backbone-*.pt")
    blob = torch.load(export, weights_only=True)
    sha = weights_sha256(blob["state_dict"])
    assert export.name == f"backbone-{sha[:8]}.pt"
    assert blob["metadata"]["weights_sha256"] == sha
    assert blob["metadata"]["arch"] == "resnet18" and blob["metadata"]["pretrain_steps"] == 20
    assert json.loads(export.with_suffix(".json").read_text())["weights_sha256"] == sha
    # torchvision key names: the export loads strictly into the registry's backbone
    encoder, _ = build_backbone("resnet18")
    encoder.load_state_dict(blob["state_dict"], strict=True)
    # ... and one pretrain record, beside the run dir (the contract's default records dir)
    (record,) = read_records(tmp_path / "records")
    assert record.kind == "pretrain" and record.status == "complete"
    assert record.checkpoint.weights_sha256 == sha and record.task.family == "pretrain"
    assert record.metrics["loss"] == lines[-1]["loss"]
    online = {
        k.removeprefix("online_encoder."): v
        for k, v in state["model"].items()
        if k.startswith("online_encoder.")
    }
    assert all(torch.equal(online[k], v) for k, v in blob["state_dict"].items())


@pytest.mark.slow
def test_two_local_processes_train_with_ddp(tmp_path):
    """--nproc 2 on CPU: two gloo ranks, each half of the global batch, rank 0 saves and exports."""
    run_dir = tmp_path / "ddp"
    result = run_quick_check(run_dir, 3, "--device", "cpu", "--nproc", "2")
    assert '"world_size": 2' in result.stderr
    assert "target networks identical on all 2 ranks" in result.stderr  # checked every epoch
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == 3
    assert len(list((run_dir / "exports").glob("backbone-*.pt"))) == 1


@pytest.mark.parametrize("argv", [["--gpus", "2"], ["--gpus=2"]])
def test_the_old_gpus_flag_is_refused_with_a_hint(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        launch.parse_args(["--preset", "tiny_cpu", *argv])
    assert exit_info.value.code == 2
    assert "--gpus is now --nproc" in capsys.readouterr().err


def test_flags_are_never_abbreviated(capsys):
    """`--max-step 3` is not `--max-steps 3`, and `--gpus-per 8` not `--gpus-per-node 8`."""
    for flag in ("--max-step", "--gpus-per"):
        with pytest.raises(SystemExit) as exit_info:
            launch.parse_args(["--preset", "tiny_cpu", flag, "3"])
        assert exit_info.value.code == 2
        assert f"unrecognized arguments: {flag} 3" in capsys.readouterr().err


def test_every_byol_bench_error_of_a_run_is_one_sentence(monkeypatch, tmp_path):
    """The boundary catches the one base class: a non-finite loss is reported like the rest."""

    class LossWentNaN(ByolBenchError):
        pass

    def run_local(*args):
        raise LossWentNaN("non-finite loss at step 3 (lr 0.2); the last good checkpoint is kept")

    monkeypatch.setattr(launch, "run_local", run_local)
    with pytest.raises(SystemExit) as exit_info:
        launch.main(["--preset", "tiny_cpu", "--run-dir", str(tmp_path / "run")])
    assert (
        exit_info.value.code == "error: non-finite loss at step 3 (lr 0.2); the last good "
        "checkpoint is kept"
    )


def test_status_of_a_directory_without_a_run(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        launch.main(["--status", str(tmp_path / "missing")])
    assert str(exit_info.value.code).startswith(f"error: {tmp_path / 'missing'} holds no run")
