"""`python -m transfer.classification` end to end on miniature releases: records, the table,
the split rule, several data sets, SLURM task split, and bad input."""

import hashlib
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from results import bootstrap
from results.record import read_records
from results.tables import build_tables
from slurm import submit as slurm_submit
from tests.conftest import run_cli
from tests.transfer.classification.miniatures import write_miniature
from tests.transfer.segmentation.layouts import make_export
from transfer.classification import cli, finetune, linear
from transfer.classification.metrics import mean_per_class
from transfer.classification.releases import TRANSFER_DATASETS, read_release
from transfer.classification.splits import heldout_size, selection_splits

FAST = ["--device", "cpu", "--num-workers", "0", "--batch-size", "16"]


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    """Pets (validation held out of train, mean per-class) and VOC2007 (the creators' val,
    11-point mAP) side by side, as `--dataset all` expects them."""
    root = tmp_path_factory.mktemp("releases")
    write_miniature("pets", root, classes=3, per_class=6, image_size=12)
    write_miniature("voc2007", root, classes=3, per_class=4, image_size=12)
    return root


def test_two_data_sets_end_to_end_records_and_table(releases, tmp_path, monkeypatch):
    monkeypatch.setenv("BYOL_BENCH_CACHE", str(tmp_path / "cache"))
    records = tmp_path / "records"
    argv = ["--ckpt", "random:resnet18", "--dataset", "pets", "voc2007", "--data", str(releases)]
    cli.main([*argv, *FAST, "--records", str(records)])
    by_dataset = {record.task.dataset: record for record in read_records(records)}
    assert set(by_dataset) == {"pets", "voc2007"}
    pets, voc = by_dataset["pets"], by_dataset["voc2007"]
    for record in (pets, voc):
        assert record.status == "complete" and record.task.family == "transfer-cls"
        assert record.task.protocol == "byol-transfer-linear/1"  # 45 penalties, 224 px
        assert len(record.selection["candidates"]) == 45
        assert record.selection["penalty"] in [c["penalty"] for c in record.selection["candidates"]]
        assert record.selection["refit_on"] == "train + val"
    assert set(pets.metrics) == {"mean_per_class"} and set(voc.metrics) == {"map11"}
    # Pets: validation held out of train (Table 10's fraction), its split file hashed
    held = heldout_size("pets", 18)
    assert pets.selection["chosen_on"] == f"heldout-{held}"
    assert pets.selection["images"] == {"train": 18 - held, "val": held, "test": 18}
    split_file = pets.selection["split_file"]
    digest = hashlib.sha256(open(split_file, "rb").read()).hexdigest()
    assert digest == pets.selection["split_sha256"]
    assert voc.selection["chosen_on"] == "creators-val" and voc.selection["split_file"] is None
    # 95% bootstrap intervals over the test images, by each metric's own definition
    examples = pets.examples
    bits = bootstrap.unpack_bits(examples["correct"]["mean_per_class"], examples["count"])
    labels = bootstrap.unpack_labels(examples["labels"])
    interval = bootstrap.mean_per_class_interval(bits, labels)
    assert pets.intervals["mean_per_class"] == pytest.approx(list(interval), abs=1e-3)
    # the bits are the refitted classifier's test hits: they give its recorded test score
    per_class = [bits[labels == c].mean() for c in np.unique(labels)]
    assert 100 * np.mean(per_class) == pytest.approx(pets.metrics["mean_per_class"])
    low, high = voc.intervals["map11"]
    assert 0 <= low <= high <= 100 and voc.examples["count"] == 12
    # the table: Table 3's layout, the paper's metric named in each column
    (table,) = [t for t in build_tables(read_records(records)) if t.id.startswith("transfer-")]
    assert "pets mean/class" in table.headers and "voc2007 mAP" in table.headers
    assert table.headers.index("voc2007 mAP") < table.headers.index("pets mean/class")


def test_selection_never_sees_test_labels(releases, tmp_path, monkeypatch):
    """The split rule: val is never in train, and changing every test label changes the test
    score only, not the chosen penalty or any validation score."""
    monkeypatch.setenv("BYOL_BENCH_CACHE", str(tmp_path / "cache"))
    release = read_release("pets", releases)
    splits = selection_splits(release, seed=0, out_dir=tmp_path / "splits")
    assert not set(splits.train_indices) & set(splits.val_indices)
    assert sorted(splits.train_indices + splits.val_indices) == list(range(len(release.train)))
    config = cli.TransferConfig(
        ckpt="random:resnet18",
        dataset="pets",
        data=str(releases),
        image_size=32,
        device="cpu",
        num_workers=0,
        records=str(tmp_path / "records"),
        penalties=(1e-3, 1e-1, 10.0, 1e3),
    )
    inputs = cli.load_inputs(config, release)
    run = dict(penalties=config.penalties, max_iter=200, batch_size=16, workers=0)
    test_scores, real_scores = [], linear.logistic.decision_scores

    def spy(model, features):  # keeps the scores of the test images (the validation's differ)
        scores = real_scores(model, features)
        if len(features) == len(release.test):
            test_scores.append(scores)
        return scores

    monkeypatch.setattr(linear.logistic, "decision_scores", spy)
    metrics, selection, _ = linear.run_linear(inputs, release, splits, **run)
    labels = torch.tensor(release.test.targets)
    shifted = [(label + 1) % 3 for label in release.test.targets]
    release.test.targets[:] = shifted  # every test label wrong from here on
    cache = tmp_path / "cache-shifted"
    monkeypatch.setenv("BYOL_BENCH_CACHE", str(cache))
    inputs.cache_dir = str(cache)
    metrics_shifted, selection_shifted, _ = linear.run_linear(inputs, release, splits, **run)
    assert selection_shifted["candidates"] == selection["candidates"]
    assert selection_shifted["penalty"] == selection["penalty"]
    # the same classifier scores the test images; only the labels it is scored against moved
    before, after = (scores.cpu() for scores in test_scores)
    assert torch.equal(before, after)
    assert metrics["mean_per_class"] == pytest.approx(mean_per_class(before, labels))
    shifted_score = mean_per_class(after, torch.tensor(shifted))
    assert metrics_shifted["mean_per_class"] == pytest.approx(shifted_score)


def test_custom_settings_are_recorded_under_their_own_protocol(releases, tmp_path, monkeypatch):
    monkeypatch.setenv("BYOL_BENCH_CACHE", str(tmp_path / "cache"))
    records = tmp_path / "records"
    argv = ["--ckpt", "random:resnet18", "--dataset", "voc2007", "--data", str(releases)]
    argv += ["--image-size", "32", "--penalties", "0.01", "1", "100", "--records", str(records)]
    result = run_cli("transfer.classification", *argv, *FAST, check=True)
    (record,) = read_records(records)
    assert record.task.protocol == "byol-transfer-linear-custom/1"
    assert [c["penalty"] for c in record.selection["candidates"]] == [0.01, 1.0, 100.0]
    assert "transfer-cls byol-transfer-linear-custom/1 voc2007/test" in result.stdout
    assert record.config["image_size"] == 32


def test_a_vit_takes_the_linear_protocol(releases, tmp_path, monkeypatch):
    """A ViT (the tests' tiny one, patch 4) through the paper's linear protocol at 224 px."""
    monkeypatch.setenv("BYOL_BENCH_CACHE", str(tmp_path / "cache"))
    records = tmp_path / "records"
    argv = ["--ckpt", "random:vit_tiny_test", "--dataset", "pets", "--data", str(releases)]
    run_cli("transfer.classification", *argv, *FAST, "--records", str(records), check=True)
    (record,) = read_records(records)
    assert record.task.protocol == "byol-transfer-linear/1" and record.status == "complete"
    assert record.checkpoint.arch == "vit_tiny_test"


def test_all_expands_to_one_task_per_data_set_in_table_order():
    argvs = cli.per_dataset_argvs(["--ckpt", "x.pt", "--dataset", "all", "--data", "/d"])
    assert [argv[-1] for argv in argvs] == list(TRANSFER_DATASETS)
    assert all(argv[:4] == ["--ckpt", "x.pt", "--data", "/d"] for argv in argvs)
    two = cli.per_dataset_argvs(["--dataset", "dtd", "pets", "--ckpt", "x.pt"])
    assert two == [["--ckpt", "x.pt", "--dataset", "dtd"], ["--ckpt", "x.pt", "--dataset", "pets"]]
    assert len(cli.per_dataset_argvs(["--ckpt", "x.pt"])) == 12  # default: all


def test_a_missing_release_is_refused_before_any_work(releases, tmp_path):
    argv = ["--ckpt", "random:resnet18", "--dataset", "pets", "dtd", "--data", str(releases)]
    result = run_cli("transfer.classification", *argv, "--records", str(tmp_path / "r"), *FAST)
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "dtd" in line and "labels" in line  # names the file the release should contain
    assert not (tmp_path / "r").exists()  # nothing ran, not even Pets


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "imagenet"], "unknown data set 'imagenet'"),
        (["--dataset", "pets", "--penalties", "0"], "--penalties needs one or more positive"),
        (
            ["--dataset", "pets", "--max-iter", "0"],
            "--image-size, --batch-size and --max-iter must",
        ),
    ],
)
def test_bad_flags_are_one_sentence(releases, argv, message):
    result = run_cli(
        "transfer.classification", "--ckpt", "random:resnet18", "--data", str(releases), *argv
    )
    assert result.returncode == 1 and f"error: {message}" in result.stderr
    assert "Traceback" not in result.stderr


def test_record_config_names_one_data_set(releases, tmp_path, monkeypatch):
    monkeypatch.setenv("BYOL_BENCH_CACHE", str(tmp_path / "cache"))
    argv = ["--ckpt", "random:resnet18", "--dataset", "pets", "--data", str(releases)]
    argv += ["--image-size", "32", "--penalties", "1", "--records", str(tmp_path / "r")]
    cli.main([*argv, *FAST])
    (record,) = read_records(tmp_path / "r")
    assert record.config["dataset"] == "pets"
    assert json.loads(json.dumps(record.selection))["release_notes"] == []
    assert torch.tensor(record.metrics["mean_per_class"]).isfinite()


@pytest.mark.slow
def test_finetune_demo_grid_end_to_end_on_voc(releases, tmp_path, monkeypatch, capsys):
    """byol-transfer-finetune/1's machinery on the demo grid: a cell alone (an array task: no
    record), then the whole grid (that cell read back), the retrain on train + val, one record."""
    records, work = tmp_path / "records", tmp_path / "work"
    argv = ["--ckpt", "random:resnet18", "--dataset", "voc2007", "--data", str(releases)]
    argv += ["--protocol", "byol-transfer-finetune/1", "--grid", "demo", "--image-size", "32"]
    argv += [*FAST, "--records", str(records), "--run-dir", str(work)]
    cli.main([*argv, "--cell", "1"])
    assert "transfer-cls voc2007 cell 1:" in capsys.readouterr().out
    assert not records.exists() or not read_records(records)
    (cell_dir,) = [path for path in work.iterdir() if (path / "result.json").is_file()]
    cli.main(argv)
    (record,) = read_records(records)
    assert record.task.protocol == "demo-transfer-finetune/1" and set(record.metrics) == {"map11"}
    low, high = record.intervals["map11"]  # the bootstrap interval of the test mAP
    assert 0 <= low <= high <= 100 and record.examples["count"] == 12
    selection = record.selection
    assert len(selection["candidates"]) == 4 and selection["chosen_on"] == "creators-val"
    assert selection["images"]["trainval"] == selection["images"]["train"] + 12
    assert (cell_dir / "result.json").is_file()
    assert "lr " in capsys.readouterr().out


def test_slurm_linear_is_one_task_per_data_set(releases, monkeypatch, capsys):
    submitted = {}

    def submit_array(profile, fn, arg_list, name, folder=None, after=()):
        submitted.update(profile=profile, commands=[command for (command,) in arg_list])
        paths = SimpleNamespace(stdout="out", stderr="err")
        return [SimpleNamespace(job_id=f"42_{i}", paths=paths) for i in range(len(arg_list))]

    monkeypatch.setattr(slurm_submit, "submit_array", submit_array)
    monkeypatch.setattr(slurm_submit, "submit", lambda *a, **k: pytest.fail("not one job"))
    argv = ["--ckpt", "random:resnet18", "--dataset", "pets", "voc2007", "--data", str(releases)]
    cli.main([*argv, "--slurm", "--profile", "example"])
    commands = submitted["commands"]
    assert [command[1:3] for command in commands] == [["-m", "transfer.classification"]] * 2
    assert [command[-2:] for command in commands] == [
        ["--dataset", "pets"],
        ["--dataset", "voc2007"],
    ]
    assert not any("--slurm" in command for command in commands)
    assert "job array of 2 one-task jobs" in capsys.readouterr().out


def test_slurm_finetune_is_one_grid_per_data_set(releases, monkeypatch):
    grids = []
    monkeypatch.setattr(
        finetune, "submit_finetune_grid", lambda args, command, grid, name: grids.append(command)
    )
    argv = ["--ckpt", "random:resnet18", "--dataset", "pets", "voc2007", "--data", str(releases)]
    argv += ["--protocol", "byol-transfer-finetune/1", "--grid", "demo"]
    cli.main([*argv, "--slurm", "--profile", "example"])
    assert [command[-2:] for command in grids] == [["--dataset", "pets"], ["--dataset", "voc2007"]]
    assert all("--slurm" not in command and "--grid" in command for command in grids)
    with pytest.raises(SystemExit, match="--cell and --slurm"):
        cli.main([*argv[:2], "--dataset", "pets", *argv[5:], "--cell", "0", "--slurm"])


def test_seeds_run_the_protocol_once_each_and_the_table_averages_them(
    releases, tmp_path, monkeypatch
):
    monkeypatch.setenv("BYOL_BENCH_CACHE", str(tmp_path / "cache"))
    records = tmp_path / "records"
    export = str(make_export(tmp_path))  # one network: random:<arch> would draw one per seed
    argv = ["--ckpt", export, "--dataset", "pets", "--data", str(releases)]
    argv += ["--image-size", "32", "--penalties", "0.1", "10", "--seeds", "0", "1"]
    cli.main([*argv, *FAST, "--records", str(records)])
    by_seed = {record.config["seed"]: record for record in read_records(records)}
    assert set(by_seed) == {0, 1}  # each seed its own held-out draw and split file
    assert by_seed[0].selection["split_sha256"] != by_seed[1].selection["split_sha256"]
    (table,) = [t for t in build_tables(read_records(records)) if t.id.startswith("transfer-")]
    values = [by_seed[seed].metrics["mean_per_class"] for seed in (0, 1)]
    (row,) = [row for row in table.rows.index if table.rows.at[row, "weights"] != "paper"]
    assert table.counts.at[row, "pets mean/class"] == 2
    assert table.values.at[row, "pets mean/class"] == pytest.approx(sum(values) / 2)
