"""evaluate.semisup end to end: the record, exact resume after a kill, the fine-tune starts from the
checkpoint on 1% of Fashion-MNIST, the grids' protocol names, SLURM array, bad input."""

import dataclasses
import gzip
import hashlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from evaluate import finetune, semisup
from pretrain.backbones import build_backbone
from pretrain.checkpoint import export_backbone, load_checkpoint
from pretrain.data import FASHION_MNIST_ROOT
from pretrain.export_metadata import backbone_metadata
from pretrain.presets import byol_r18_fmnist_demo
from results.record import read_records
from tests.conftest import run_cli
from tests.results.test_bootstrap import assert_intervals_follow_from_examples

# 10% of the synthetic set: 51 labelled images (4 steps of 16 per epoch), 50 held out, 256 tested.
SMALL = ("--dataset", "synthetic", "--fraction", "10", "--batch-size", "16", "--num-workers", "0")


class Killed(Exception):
    """Stands for SIGKILL in the middle of a fine-tune."""


def complete_records(records_dir):
    return [record for record in read_records(records_dir) if record.status == "complete"]


def test_record_holds_every_cell_and_the_split_files(tmp_path):
    records = tmp_path / "records"
    grid = ("--lrs", "0.1", "0.4", "--epochs", "1", "2")
    semisup.main(["--ckpt", "random:resnet18", *SMALL, *grid, "--records", str(records)])
    (record,) = read_records(records)  # validated on read
    assert (record.kind, record.status, record.task.family) == ("eval", "complete", "semisup")
    assert (record.task.dataset, record.task.split) == ("synthetic", "test")
    assert record.task.protocol == "custom-10pct/1"  # not the paper's grid: its own name
    selection = record.selection
    cells = [(c["lr"], c["epochs"]) for c in selection["candidates"]]
    assert cells == [(0.1, 1), (0.4, 1), (0.1, 2), (0.4, 2)]
    assert [c["steps"] for c in selection["candidates"]] == [4, 4, 8, 8]
    best = max(selection["candidates"], key=lambda c: c["heldout_top1"])  # first on ties
    assert (selection["lr"], selection["epochs"]) == (best["lr"], best["epochs"])
    assert selection["lr_scaled"] == pytest.approx(selection["lr"] * 16 / 1024)
    assert selection["labelled_images"] == 51 and selection["chosen_on"] == "heldout-50"
    assert selection["split_source"] == "seeded" and selection["heldout_subset_images_removed"] == 0
    split_lines = open(selection["split_file"]).read().splitlines()
    assert len(split_lines) == 51 and split_lines[0].startswith("synthetic-train-")
    with open(selection["split_file"], "rb") as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == selection["split_file_sha256"]
    assert 0 <= record.metrics["top1"] <= record.metrics["top5"] <= 100
    assert record.config["fraction"] == 10 and record.config["lrs"] == [0.1, 0.4]


def test_resume_after_a_kill_gives_the_same_result(tmp_path, monkeypatch):
    grid = ("--lrs", "0.1", "0.4", "--epochs", "2")  # two cells of 8 steps, 4 per epoch
    semisup.main(
        [
            "--ckpt",
            "random:resnet18",
            *SMALL,
            *grid,
            "--records",
            str(tmp_path / "a"),
            "--run-dir",
            str(tmp_path / "a" / "cells"),
        ]
    )
    calls, real_step = [], finetune.train_step

    def dies_at_call_15(*args, **kwargs):  # cell 2, epoch 2, after its epoch-1 checkpoint
        calls.append(1)
        if len(calls) == 15:
            raise Killed
        return real_step(*args, **kwargs)

    killed = [
        "--ckpt",
        "random:resnet18",
        *SMALL,
        *grid,
        "--records",
        str(tmp_path / "b"),
        "--run-dir",
        str(tmp_path / "b" / "cells"),
    ]
    monkeypatch.setattr(finetune, "train_step", dies_at_call_15)
    with pytest.raises(Killed):
        semisup.main(killed)
    second_cell = tmp_path / "b" / "cells" / "lr0.4-ep2"
    assert load_checkpoint(second_cell / "checkpoints" / "last.pt")["step"] == 4
    monkeypatch.setattr(finetune, "train_step", real_step)
    semisup.main(killed)  # the same command resumes: cell 1 read back, cell 2 from step 4
    (uninterrupted,), (resumed,) = (
        complete_records(tmp_path / "a"),
        complete_records(tmp_path / "b"),
    )
    assert [r.status for r in read_records(tmp_path / "b")] == ["failed", "complete"]
    assert resumed.metrics == uninterrupted.metrics
    assert resumed.selection["candidates"] == uninterrupted.selection["candidates"]
    for cell in ("lr0.1-ep2", "lr0.4-ep2"):
        final = [
            load_checkpoint(tmp_path / run / "cells" / cell / "checkpoints" / "last.pt")
            for run in ("a", "b")
        ]
        assert final[0]["step"] == final[1]["step"] == 8
        for run in ("a", "b"):  # a finished cell keeps last.pt only (no fallback copy)
            checkpoints = tmp_path / run / "cells" / cell / "checkpoints"
            assert sorted(path.name for path in checkpoints.iterdir()) == ["last.pt"]
        for name, tensor in final[0]["model"].items():
            assert torch.equal(tensor, final[1]["model"][name]), name


@pytest.fixture
def fmnist_2000_test(tmp_path):
    """Fashion-MNIST's training files and the first 2,000 test images (idx files, uncompressed)."""
    root = tmp_path / "fmnist"
    root.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (root / name).symlink_to(Path(FASHION_MNIST_ROOT) / name)
    for name, header_size, item_size in (
        ("t10k-images-idx3-ubyte", 16, 784),
        ("t10k-labels-idx1-ubyte", 8, 1),
    ):
        with gzip.open(Path(FASHION_MNIST_ROOT) / f"{name}.gz", "rb") as handle:
            raw = handle.read()
        header = bytearray(raw[:header_size])
        header[4:8] = (2000).to_bytes(4, "big")  # the image count
        (root / name).write_bytes(bytes(header) + raw[header_size : header_size + 2000 * item_size])
    return str(root)


@pytest.fixture
def fmnist_export(tmp_path) -> str:
    """An export in byol-bench's format with the demo preset's metadata (ResNet-18 at 16 px,
    Fashion-MNIST's normalisation) and weights of their own (seed 7, not `random:`'s seed 0)."""
    config = dataclasses.asdict(byol_r18_fmnist_demo())
    torch.manual_seed(7)
    encoder, _ = build_backbone(config["backbone"])
    metadata = backbone_metadata(config, label="seed7", step=0, steps_per_epoch=None)
    return str(export_backbone(tmp_path / "seed7", encoder.state_dict(), metadata))


def relative_distance(state: dict, reference: dict) -> float:
    """||conv weights - reference's|| / ||reference's conv weights|| over every convolution."""
    names = [name for name, tensor in reference.items() if tensor.dim() == 4]
    difference = sum(float((state[n] - reference[n]).pow(2).sum()) for n in names)
    return (difference / sum(float(reference[n].pow(2).sum()) for n in names)) ** 0.5


@pytest.mark.slow  # two fine-tunes + 4,000 evaluated images: a minute or two on 2 cores
def test_the_fine_tune_starts_from_the_checkpoint_on_1pct_fashion_mnist(
    fmnist_export, fmnist_2000_test, tmp_path
):
    """The export's cell ends 2% from the export's weights (two inits lie 141% apart), the
    random-init cell far from them; same split, same grid; each record names its start weights.

    Which start wins after 15 steps is not a property of the code: this seed-7 export scored 40.3
    top-1 and random init's seed 0 52.2; BYOL exports of the demo's first 100 or 300 steps scored
    37.8-53.3, depending on the CPU's arithmetic and the step; a ResNet-18 trained with labels for
    300 steps 45.9. README "The demo preset" reports the whole demo's gain: +2.6 at 1%."""
    export = torch.load(fmnist_export, map_location="cpu", weights_only=True)
    arch, size = export["metadata"]["arch"], export["metadata"]["preprocessing"]["image_size"]
    short = (
        *("--dataset", "fmnist", "--data", fmnist_2000_test, "--fraction", "1"),
        *("--lrs", "0.05", "--epochs", "3", "--batch-size", "128", "--heldout-max", "500"),
        *("--num-workers", "0"),
    )
    for name, start in (
        ("export", ["--ckpt", fmnist_export]),
        ("random", [f"--ckpt=random:{arch}"]),
    ):
        semisup.main(
            [*start, "--image-size", str(size), *short, "--records", str(tmp_path / name)]
            + ["--run-dir", str(tmp_path / name / "cells")]
        )
    (trained,), (random,) = (
        complete_records(tmp_path / "export"),
        complete_records(tmp_path / "random"),
    )
    assert trained.selection["labelled_images"] == random.selection["labelled_images"] == 600
    assert trained.selection["split_file_sha256"] == random.selection["split_file_sha256"]
    assert trained.checkpoint.weights_sha256 == export["metadata"]["weights_sha256"]
    assert random.checkpoint.weights_sha256 != trained.checkpoint.weights_sha256
    print(f"1% top-1: export {trained.metrics['top1']}, random init {random.metrics['top1']}")
    fine_tuned = {
        name: load_checkpoint(tmp_path / name / "cells" / "lr0.05-ep3" / "checkpoints" / "last.pt")
        for name in ("export", "random")
    }
    encoders = {
        name: {k.removeprefix("encoder."): v for k, v in state["model"].items()}
        for name, state in fine_tuned.items()
    }
    assert fine_tuned["export"]["step"] == fine_tuned["random"]["step"] == 15  # 5 per epoch
    assert relative_distance(encoders["export"], export["state_dict"]) < 0.1
    assert relative_distance(encoders["random"], export["state_dict"]) > 1


def test_grids_and_their_protocol_names():
    paper, _ = semisup.parse_config(["--ckpt", "x.pt", "--fraction", "1"])
    assert semisup.protocol_name(paper) == "byol-paper-1pct/1" and paper.batch_size == 1024
    cells = semisup.grid_cells(paper)
    assert len(cells) == 10 and {cell.epochs for cell in cells[:5]} == {30}
    assert [cell.lr for cell in cells[5:]] == [0.01, 0.02, 0.05, 0.1, 0.005]
    ten, _ = semisup.parse_config(["--ckpt", "x.pt", "--fraction", "10"])
    assert semisup.protocol_name(ten) == "byol-paper-10pct/1"
    demo, _ = semisup.parse_config(["--ckpt", "x.pt", "--fraction", "10", "--grid", "demo"])
    fast, _ = semisup.parse_config(["--ckpt", "x.pt", "--fraction", "10", "--fast"])
    assert demo == fast and semisup.protocol_name(demo) == "demo-10pct/1"
    assert (demo.epochs, demo.batch_size, demo.heldout_max) == ((1,), 128, 1000)
    shortened, _ = semisup.parse_config(["--ckpt", "x.pt", "--fraction", "1", "--epochs", "1"])
    assert semisup.protocol_name(shortened) == "custom-1pct/1"  # never recorded as the paper's
    rescaled, _ = semisup.parse_config(["--ckpt", "x.pt", "--fraction", "1", "--batch-size", "256"])
    assert semisup.protocol_name(rescaled) == "byol-paper-1pct/1"  # LRs scale with the batch


def test_slurm_runs_one_array_task_per_cell_then_the_choice(monkeypatch, tmp_path, capsys):
    submitted = {}

    def fake_job(job_id):
        return SimpleNamespace(job_id=job_id, paths=SimpleNamespace(stdout="out", stderr="err"))

    def submit_array(profile, fn, arg_list, name, folder=None, after=()):
        submitted["array"], submitted["array_after"] = [args[0] for args in arg_list], list(after)
        return [fake_job(f"7_{index}") for index in range(len(arg_list))]

    def submit(profile, fn, command, name, folder=None, after=()):
        submitted["final"], submitted["final_after"] = command, list(after)
        return fake_job("8")

    monkeypatch.setattr(semisup.slurm_submit, "submit_array", submit_array)
    monkeypatch.setattr(semisup.slurm_submit, "submit", submit)
    argv = ["--ckpt", "x.pt", "--fraction", "1", "--data", "/imagenet", "--split-file", "1p.txt"]
    semisup.main([*argv, "--slurm", "--profile", "local", "--after", "5"])
    assert len(submitted["array"]) == 10 and submitted["array_after"] == ["5"]
    for index, command in enumerate(submitted["array"]):
        assert command[-2:] == ["--cell", str(index)] and command[3:-2] == argv
    assert submitted["final"][3:] == argv and "--slurm" not in submitted["final"]
    assert submitted["final_after"] == [f"7_{index}" for index in range(10)]
    assert "submitted SLURM job 8" in capsys.readouterr().out


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    result = run_cli("evaluate.semisup", "--ckpt", "random:resnet18", "--fraction", "5")
    assert result.returncode == 2
    assert "--fraction 5" in result.stderr and "--fraction 1 or --fraction 10" in result.stderr
    imagenet_file = tmp_path / "1percent.txt"
    imagenet_file.write_text("".join(f"n01440764_{k}.JPEG\n" for k in range(51)))
    with pytest.raises(SystemExit) as error:
        semisup.main(
            [
                "--ckpt",
                "random:resnet18",
                *SMALL,
                "--split-file",
                str(imagenet_file),
                "--records",
                str(tmp_path),
            ]
        )
    message = str(error.value.code)
    assert message.startswith("error: none of the 51 names") and "another data set" in message
    with pytest.raises(SystemExit) as error:
        semisup.main(["--ckpt", "random:resnet18", *SMALL, "--cell", "3", "--lrs", "0.1"])
    assert "--cell 3: the grid has cells 0..1" in str(error.value.code)


def test_a_diverged_cell_records_its_step_and_keeps_its_last_good_checkpoint(tmp_path, monkeypatch):
    """The fine-tune loop's non-finite loss goes through pretrain/rundir.py:check_finite."""
    calls, real_step = [], finetune.train_step

    def nan_at_call_6(*args, **kwargs):  # cell 1, step 5: after its epoch-1 checkpoint
        calls.append(1)
        return float("nan") if len(calls) == 6 else real_step(*args, **kwargs)

    monkeypatch.setattr(finetune, "train_step", nan_at_call_6)
    grid = ("--lrs", "0.1", "0.4", "--epochs", "2")
    paths = ("--records", str(tmp_path / "r"), "--run-dir", str(tmp_path / "cells"))
    semisup.main(["--ckpt", "random:resnet18", *SMALL, *grid, *paths])
    (record,) = complete_records(tmp_path / "r")
    diverged, finished = record.selection["candidates"]
    assert (diverged["heldout_top1"], diverged["diverged_at_step"]) == (None, 5)
    assert finished["heldout_top1"] is not None and finished["diverged_at_step"] is None
    kept = load_checkpoint(tmp_path / "cells" / "lr0.1-ep2" / "checkpoints" / "last.pt")
    assert kept["step"] == 4


def test_the_held_out_winner_is_chosen_when_held_out_and_test_disagree(tmp_path, monkeypatch):
    """Selection does not depend on luck: the cells' held-out and test rankings are forced to
    disagree, and the record holds the held-out winner (0.4) with its own test score."""
    heldout = {0.1: 30.0, 0.4: 70.0, 1.0: 50.0}  # held-out winner: 0.4
    test = {0.1: 90.0, 0.4: 20.0, 1.0: 60.0}  # test winner: 0.1

    def fake_cell(cell, setup, cell_dir):
        top1 = heldout[cell.lr]
        scores = {"heldout_top1": top1, "heldout_top5": top1, "steps": 4, "diverged_at_step": None}
        return {"lr": cell.lr, "epochs": cell.epochs, **scores}

    monkeypatch.setattr(semisup, "run_cell", fake_cell)
    monkeypatch.setattr(semisup, "trained_classifier", lambda cell, setup, cell_dir: cell.lr)

    def fake_hits(lr, *_):  # 10 test images, test[lr] percent of them right
        hits = torch.arange(10) < test[lr] / 10
        return {1: hits, 5: hits}

    monkeypatch.setattr(semisup, "classifier_hits", fake_hits)
    grid = ("--lrs", "0.1", "0.4", "1.0", "--epochs", "1")
    records = tmp_path / "records"
    semisup.main(["--ckpt", "random:resnet18", *SMALL, *grid, "--records", str(records)])
    (record,) = read_records(records)
    assert record.selection["lr"] == 0.4
    assert record.metrics == {"top1": 20.0, "top5": 20.0}
    assert_intervals_follow_from_examples(record, ("top1", "top5"))  # the chosen cell's test bits
    assert [c["heldout_top1"] for c in record.selection["candidates"]] == [30.0, 70.0, 50.0]


def test_seeds_run_one_grid_each_with_its_own_subset(tmp_path, monkeypatch):
    """--seeds 0 1: two grids, two records (config.seed 0 and 1), each with its own labelled
    subset; with --slurm, one grid of jobs per seed."""

    def fake_cell(cell, setup, cell_dir):
        scores = {"heldout_top1": 50.0, "heldout_top5": 50.0, "steps": 4, "diverged_at_step": None}
        return {"lr": cell.lr, "epochs": cell.epochs, **scores}

    monkeypatch.setattr(semisup, "run_cell", fake_cell)
    monkeypatch.setattr(semisup, "trained_classifier", lambda *args: None)
    hits = torch.arange(10) < 4
    monkeypatch.setattr(semisup, "classifier_hits", lambda *args: {1: hits, 5: hits})
    argv = ["--ckpt", "random:resnet18", *SMALL, "--lrs", "0.1", "--epochs", "1"]
    records = tmp_path / "records"
    semisup.main([*argv, "--seeds", "0", "1", "--records", str(records)])
    by_seed = {record.config["seed"]: record for record in read_records(records)}
    assert set(by_seed) == {0, 1}
    assert by_seed[0].selection["split_file_sha256"] != by_seed[1].selection["split_file_sha256"]
    grids = []
    monkeypatch.setattr(
        semisup, "submit_cells_then_final", lambda args, command, *rest: grids.append(command)
    )
    semisup.main([*argv, "--seeds", "3", "4", "--slurm", "--profile", "example"])
    assert [command[-2:] for command in grids] == [["--seed", "3"], ["--seed", "4"]]
