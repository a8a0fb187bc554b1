"""Checkpoint series (issue 15, item 6): `--ckpt` with a run directory, a glob or several files
evaluates each checkpoint, one record each, and the report draws accuracy against pretraining
epochs with the random-init baseline; with --slurm, one job array task per checkpoint.

The run: `pretrain.launch --preset tiny_cpu --keep-every-epochs 1 --epochs 3` on a 16-image
folder (one step per epoch, so three keepers take seconds; the synthetic set's 32 steps per
epoch would take minutes on a shared CPU). Same code path as a real run.
"""

import html
import json
import re
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from evaluate import knn, linear, series
from evaluate.features import load_encoder
from pretrain.checkpoint import CheckpointError
from results import report
from results.record import read_records
from slurm import submit as slurm_submit
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def keeper_run(tmp_path_factory):
    """A tiny run with checkpoints/epoch_000{1,2,3}.pt and its export; returns the run dir."""
    root = tmp_path_factory.mktemp("series")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in ("a", "b"):
            folder = root / "images" / split / name
            folder.mkdir(parents=True)
            for index in range(8):
                pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.png")
    run_dir = root / "runs" / "tiny"
    run_cli(
        "pretrain.launch",
        *("--preset", "tiny_cpu", "--dataset", "folder", "--data", str(root / "images")),
        *("--run-dir", str(run_dir), "--epochs", "3", "--warmup-epochs", "0"),
        *("--keep-every-epochs", "1"),
        check=True,
    )
    return run_dir


def test_a_run_dir_gives_one_record_per_keeper_and_the_report_draws_the_curve(keeper_run, tmp_path):
    records_dir = tmp_path / "records"
    result = run_cli(
        "evaluate.knn",
        *("--ckpt", str(keeper_run), "random:resnet18"),
        *("--dataset", "synthetic", "--records", str(records_dir)),
        check=True,
    )
    assert "checkpoint 4/4: random:resnet18" in result.stdout
    records = read_records(records_dir)
    keepers = sorted(
        (r for r in records if r.checkpoint.method != "random-init"),
        key=lambda r: r.checkpoint.pretrain_epochs,
    )
    # Three keepers; the export is not evaluated again: it holds epoch 3's online encoder.
    assert len(records) == 4 and len(keepers) == 3
    assert [r.checkpoint.pretrain_epochs for r in keepers] == [1, 2, 3]
    assert [r.checkpoint.path for r in keepers] == [
        str((keeper_run / "checkpoints" / f"epoch_000{epoch}.pt").resolve()) for epoch in (1, 2, 3)
    ]
    assert {r.checkpoint.label for r in keepers} == {"tiny"}
    assert len({r.checkpoint.weights_sha256 for r in keepers}) == 3
    (export,) = (keeper_run / "exports").glob("backbone-*.json")
    assert keepers[-1].checkpoint.weights_sha256 == json.loads(export.read_text())["weights_sha256"]

    (baseline,) = [r for r in records if r.checkpoint.method == "random-init"]
    (curve,) = report.accuracy_curves(records)
    assert (curve.run, curve.arch, curve.family, curve.dataset) == (
        "tiny",
        "resnet18",
        "knn",
        "synthetic",
    )
    assert [epochs for epochs, _ in curve.points] == [1, 2, 3]
    assert [top1 for _, top1 in curve.points] == [r.metrics["top1"] for r in keepers]
    assert curve.baseline == baseline.metrics["top1"]
    out = tmp_path / "report.html"
    report.main(["--records", str(records_dir), "--out", str(out)])
    alts = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,', out.read_text())
    (alt,) = [html.unescape(alt) for alt in alts if alt.startswith("top-1 against")]
    assert any(alt.startswith("bar chart of") for alt in alts)  # and the table's bars
    assert "tiny: 3 points at epochs 1, 2, 3" in alt
    assert f"random init resnet18: {baseline.metrics['top1']:.1f}" in alt


def test_a_glob_and_several_files(keeper_run, tmp_path, capsys):
    keepers = keeper_run / "checkpoints"
    records_dir = tmp_path / "records"
    pattern = str(keepers / "epoch_000[12].pt")
    knn.main(["--ckpt", pattern, "--dataset", "synthetic", "--records", str(records_dir)])
    epochs = sorted(r.checkpoint.pretrain_epochs for r in read_records(records_dir))
    assert epochs == [1, 2]
    files = [str(keepers / "epoch_0003.pt"), str(keepers / "epoch_0001.pt")]
    argvs = series.per_checkpoint_argvs(["--dataset", "synthetic", "--ckpt", *files, files[0]])
    assert argvs == [["--dataset", "synthetic", "--ckpt", path] for path in files]  # once each
    assert series.per_checkpoint_argvs(["--ckpt", pattern, "--fast"]) == [
        ["--fast", "--ckpt", str(keepers / f"epoch_000{epoch}.pt")] for epoch in (1, 2)
    ]


def _touch(path, text=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_run_dir_expansion_adds_the_export_only_when_no_keeper_holds_its_weights(tmp_path):
    run = tmp_path / "run"
    first = _touch(run / "checkpoints" / "epoch_0010.pt")
    second = _touch(run / "checkpoints" / "epoch_0020.pt")
    _touch(run / "checkpoints" / "last.pt")  # resume files are not keepers
    export = _touch(run / "exports" / "backbone-12345678.pt")
    _touch(export.with_suffix(".json"), json.dumps({"pretrain_epochs": 25.0}))
    assert series.run_dir_checkpoints(run) == [first, second, export]
    _touch(export.with_suffix(".json"), json.dumps({"pretrain_epochs": 20.0}))
    assert series.run_dir_checkpoints(run) == [first, second]
    assert series.expand_checkpoints(["random:resnet18", "missing.pt"]) == [
        "random:resnet18",
        "missing.pt",
    ]
    with pytest.raises(series.SeriesError, match="without checkpoints/epoch_"):
        series.expand_checkpoints([str(tmp_path / "run" / "checkpoints")])
    with pytest.raises(series.SeriesError, match="matches no file"):
        series.expand_checkpoints([str(tmp_path / "nothing-*.pt")])


def test_the_paper_linear_protocol_refuses_a_series(monkeypatch):
    submitted = []
    monkeypatch.setattr(slurm_submit, "submit_array", lambda *a, **k: submitted.append(a))
    for extra in ([], ["--slurm", "--profile", "example"]):
        with pytest.raises(SystemExit, match="too expensive for a series.*--fast"):
            linear.main(["--ckpt", "random:resnet18", "random:resnet34", *extra])
    assert submitted == []


@pytest.mark.parametrize(("module", "extra"), [(knn, []), (linear, ["--fast"])])
def test_slurm_submits_one_array_task_per_checkpoint(monkeypatch, capsys, tmp_path, module, extra):
    run = tmp_path / "run"
    keepers = [_touch(run / "checkpoints" / f"epoch_000{epoch}.pt") for epoch in (1, 2, 3)]
    submitted = {}

    def submit_array(profile, fn, arg_list, name, folder=None, after=()):
        submitted.update(profile=profile, fn=fn, arg_list=arg_list, name=name)
        paths = SimpleNamespace(stdout="out", stderr="err")
        return [SimpleNamespace(job_id=f"42_{i}", paths=paths) for i in range(len(arg_list))]

    monkeypatch.setattr(slurm_submit, "submit_array", submit_array)
    monkeypatch.setattr(slurm_submit, "submit", lambda *a, **k: pytest.fail("not one job"))
    module.main(
        ["--ckpt", str(run), *extra, "--dataset", "synthetic", "--slurm", "--profile", "example"]
    )
    profile = submitted["profile"]
    assert (profile.nodes, profile.tasks, profile.gpus_per_node) == (1, 1, 1)
    assert submitted["fn"] is slurm_submit.run_command
    commands = [command for (command,) in submitted["arg_list"]]
    cli = module.__name__
    assert [command[1:3] for command in commands] == [["-m", cli]] * 3
    assert [command[3:] for command in commands] == [
        [*extra, "--dataset", "synthetic", "--ckpt", str(path)] for path in keepers
    ]
    assert submitted["name"] == cli.replace(".", "-")
    out = capsys.readouterr().out
    assert "job array of 3 one-task jobs" in out and "submitted SLURM job 42_2" in out


def test_a_failed_checkpoint_does_not_stop_the_series(capsys):
    seen = []

    def run_one(argv):
        seen.append(argv[-1])
        if argv[-1] == "b.pt":
            raise SystemExit("error: b.pt does not exist")

    argvs = [["--ckpt", name] for name in ("a.pt", "b.pt", "c.pt")]
    with pytest.raises(SystemExit, match=r"1 of 3 checkpoints failed: b\.pt"):
        series.run_series(argvs, run_one)
    assert seen == ["a.pt", "b.pt", "c.pt"]
    assert "error: b.pt does not exist" in capsys.readouterr().err

    def usage_error(argv):
        seen.append(argv[-1])
        raise SystemExit(2)

    seen.clear()
    with pytest.raises(SystemExit) as stopped:
        series.run_series(argvs, usage_error)
    assert stopped.value.code == 2 and seen == ["a.pt"]


def test_one_file_clis_refuse_a_run_directory_with_a_sentence(tmp_path):
    _touch(tmp_path / "run" / "checkpoints" / "epoch_0001.pt")
    with pytest.raises(CheckpointError, match="is a directory: a run directory stands for"):
        load_encoder(str(tmp_path / "run"))


def test_seeds_expand_to_one_run_per_seed():
    argv = ["--ckpt", "x.pt", "--seeds", "0", "2", "0", "--fraction", "1"]
    assert series.per_seed_argvs(argv) == [
        ["--ckpt", "x.pt", "--fraction", "1", "--seed", "0"],
        ["--ckpt", "x.pt", "--fraction", "1", "--seed", "2"],
    ]
    assert series.per_seed_argvs(["--ckpt", "x.pt"]) == [["--ckpt", "x.pt"]]
    with pytest.raises(series.SeriesError, match="--seed and --seeds"):
        series.per_seed_argvs(["--seeds", "1", "--seed", "0"])
    with pytest.raises(series.SeriesError, match="one or more integers"):
        series.per_seed_argvs(["--seeds", "a"])
    with pytest.raises(series.SeriesError, match="one or more integers"):
        series.per_seed_argvs(["--seeds", "--ckpt", "x.pt"])


def test_a_failed_seed_does_not_stop_the_others(capsys):
    def run_one(argv):
        if argv[-1] == "1":
            sys.exit("error: seed 1 diverged")

    with pytest.raises(SystemExit, match="1 of 3 seeds failed: 1"):
        series.run_series(series.per_seed_argvs(["--seeds", "0", "1", "2"]), run_one, "seed")
    assert "seed 3/3: 2" in capsys.readouterr().out
