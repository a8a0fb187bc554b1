"""The evaluation harness (evaluate/harness.py): defaults shared by every evaluation CLI, the
work-directory rule, and the error boundary's answers to bad input, through linear and kNN."""

import argparse
import importlib
import os

import pytest
import torch

from evaluate import harness, knn, linear, semisup
from pretrain.checkpoint import load_checkpoint, save_checkpoint
from pretrain.small_inputs import SinglePositionConv2d
from results.errors import ByolBenchError
from results.record import read_records
from tests.conftest import run_cli
from tests.evaluate.conftest import only_record
from tests.image_folders import make_image_folder

FAST = ("--dataset", "synthetic", "--fast", "--num-workers", "0")
KNN = ("--dataset", "synthetic", "--num-workers", "0")


def test_random_init_baseline_and_default_records_dir(tiny_run, tmp_path):
    linear.main(["--ckpt", "random:resnet18", *FAST, "--epochs", "5", "--records", str(tmp_path)])
    record = only_record(tmp_path)
    assert record.checkpoint.label == "random-init resnet18"
    assert record.checkpoint.method == "random-init" and record.checkpoint.pretrain_epochs == 0
    knn.main(["--ckpt", str(tiny_run / "checkpoints" / "last.pt"), *KNN])  # no --records
    beside_run = read_records(tiny_run.parent / "records")  # records/ beside the run dir
    (beside,) = [record for record in beside_run if record.kind == "eval"]  # + the pretrain one
    assert beside.checkpoint.label == tiny_run.name and beside.task.family == "knn"


def expect_error(main, argv, *fragments):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and all(f in message for f in fragments), message


@pytest.mark.parametrize("main", [linear.main, knn.main])
def test_corrupt_checkpoint(tiny_export, tmp_path, main):
    corrupt = tmp_path / tiny_export.name
    corrupt.write_bytes(tiny_export.read_bytes()[: tiny_export.stat().st_size // 2])
    flags = FAST if main is linear.main else KNN  # kNN has no --fast
    expect_error(main, ["--ckpt", str(corrupt), *flags], str(corrupt), "cannot be read")
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


def test_an_error_in_a_data_loader_worker_is_one_sentence(tmp_path):
    """A corrupt JPEG under --dataset folder fails in a DataLoader worker; the user sees the
    reader's sentence, not "Caught DataError in DataLoader worker process 0" and its traceback."""
    make_image_folder(tmp_path / "data" / "train")
    make_image_folder(tmp_path / "data" / "val")
    broken = tmp_path / "data" / "train" / "a" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a JPEG")
    result = run_cli(
        "evaluate.knn",
        "--ckpt",
        "random:resnet18",
        "--dataset",
        "folder",
        "--data",
        str(tmp_path / "data"),
        "--num-workers",
        "1",
        "--image-size",
        "16",
        "--records",
        str(tmp_path / "records"),
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"error: cannot read image {broken} (")
    assert "Caught" not in result.stderr and "worker" not in result.stderr
    (record,) = read_records(tmp_path / "records")  # the run had started: a failed record
    assert record.status == "failed" and record.error.startswith("DataError: cannot read image")


def test_user_message_unwraps_torchs_worker_exception():
    class Broken(ByolBenchError):
        pass

    def worker():
        raise Broken("cannot read image x.jpg (truncated); delete or replace the file")

    def reraised():
        from torch._utils import ExceptionWrapper

        try:
            worker()
        except Broken:
            wrapper = ExceptionWrapper(where="in DataLoader worker process 0")
        wrapper.reraise()

    with pytest.raises(Broken) as error:
        reraised()
    assert str(error.value).startswith("Caught Broken in DataLoader worker process 0")
    sentence = "cannot read image x.jpg (truncated); delete or replace the file"
    assert harness.user_message(error.value) == sentence
    assert harness.user_message(Broken("plain sentence")) == "plain sentence"


def test_default_num_workers_follows_the_cpus_this_process_may_use(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert harness.default_num_workers() == 2
    assert linear.LinearConfig(ckpt="x").num_workers == knn.KnnConfig(ckpt="x").num_workers == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert harness.default_num_workers() == harness.MAX_DEFAULT_WORKERS == 8


def test_cuda_without_a_device_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert harness.pick_device(None) == torch.device("cpu")
    with pytest.raises(harness.InputError, match="no CUDA device is visible; use --device cpu"):
        harness.pick_device("cuda")


def test_work_dirs_live_under_runs_evals_never_in_records(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "shared" / "runs" / "r50"
    (run / "exports").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    ckpt = str(run / "exports" / "backbone-3f2a9c1d.pt")
    metadata = {"weights_sha256": "3f2a9c1d" + "0" * 56}

    def work_dir(ckpt, records=None, **extra):
        return harness.work_dir(
            "semisup", "byol-paper-1pct/1", metadata, ckpt=ckpt, records=records, **extra
        )

    runs = tmp_path / "shared" / "runs"
    assert harness.records_dir(ckpt, None) == runs / "records"
    expected = runs / "evals" / "semisup" / "byol-paper-1pct-v1" / "3f2a9c1d"
    assert work_dir(ckpt) == expected
    assert work_dir(ckpt, str(tmp_path / "elsewhere")) == expected  # the run's <runs> wins
    assert work_dir(ckpt, variant="fmnist-seed0") == expected.with_name("3f2a9c1d-fmnist-seed0")
    foreign = str(tmp_path / "r50.pth")
    assert work_dir(foreign, str(tmp_path / "out" / "records")).parent.parent.parent == (
        tmp_path / "out" / "evals"
    )
    assert work_dir("random:resnet18").parents[2] == tmp_path / "runs" / "evals"
    assert work_dir(ckpt, run_dir="cells") == harness.Path("cells")
    for path in (work_dir(ckpt), work_dir(foreign, "recs"), work_dir("random:resnet18")):
        assert "records" not in path.parts


EVALUATION_CLIS = [
    "evaluate.linear",
    "evaluate.knn",
    "evaluate.semisup",
    "transfer.detection.cli",
    "transfer.segmentation.cli",
    "transfer.depth.cli",
]


class _Parsed(Exception):
    pass


@pytest.mark.parametrize("module", [*EVALUATION_CLIS, "results.pipeline"])
def test_every_flag_has_a_help_text(monkeypatch, module):
    parsers = []

    def keep(parser, *args, **kwargs):
        parsers.append(parser)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", keep)
    with pytest.raises(_Parsed):
        importlib.import_module(module).main(["--ckpt", "x.pt", "--preset", "tiny_cpu"])
    silent = [action.option_strings for action in parsers[0]._actions if not action.help]
    assert silent == []


@pytest.mark.parametrize("module", EVALUATION_CLIS)
def test_usage_errors_exit_2_and_a_missing_checkpoint_exits_1_with_one_sentence(module, tmp_path):
    name = module.removesuffix(".cli")
    extra = ["--fraction", "1"] if name == "evaluate.semisup" else []
    unknown = run_cli(name, "--ckpt", "random:resnet18", *extra, "--no-such-flag")
    assert unknown.returncode == 2 and "unrecognized arguments: --no-such-flag" in unknown.stderr
    missing = tmp_path / "backbone-00000000.pt"
    result = run_cli(name, "--ckpt", str(missing), *extra, "--records", str(tmp_path / "r"))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(errors) == 1 and errors[0].startswith(f"error: checkpoint {missing} does not exist")
    assert not (tmp_path / "r").exists()  # refused before the run: no record


def test_semisup_fine_tunes_live_under_runs_evals_not_records(tmp_path):
    """The cells' checkpoints (GBs on ImageNet) are work files, not records."""
    records = str(tmp_path / "records")
    argv = ["--ckpt", "random:resnet18", "--fraction", "10", "--dataset", "synthetic"]
    config, _ = semisup.parse_config([*argv, "--records", records])
    path = semisup.work_dir(config, {"weights_sha256": "ab" * 32})
    assert (
        path == tmp_path / "evals" / "semisup" / "byol-paper-10pct-v1" / "abababab-synthetic-seed0"
    )
    help_text = run_cli("evaluate.semisup", "--help").stdout
    assert "<runs>/evals/semisup/" in help_text and "finetunes" not in help_text


def test_inputs_compute_single_position_convolutions_as_matrix_products(tmp_path):
    """At 16 px every convolution of layer3 and layer4 has one output position: the harness runs
    them as matrix products (pretrain/small_inputs.py), with the same features as the plain
    encoder of the same weights."""
    config = linear.LinearConfig(
        ckpt="random:resnet18", dataset="synthetic", image_size=16, records=str(tmp_path)
    )
    inputs = harness.load_inputs(config)
    plain, _ = harness.load_encoder("random:resnet18", seed=config.seed)
    swapped = [
        name for name, m in inputs.encoder.named_modules() if type(m) is SinglePositionConv2d
    ]
    assert swapped and all(name.startswith(("layer3", "layer4")) for name in swapped)
    images = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(inputs.encoder.eval()(images), plain.eval()(images))
