"""`python -m transfer.depth` end to end on generated NYU files: records, the table, the protocol
names, exact resume, the scored region, bad input."""

import hashlib

import numpy as np
import pytest
import torch
from torch import nn

from results.record import read_records
from results.samples import load_recorded
from results.tables import build_tables
from tests.conftest import run_cli
from tests.transfer.depth.layouts import pattern_images, write_frames, write_labelled_mat
from transfer.dense_probe.features import DenseView
from transfer.depth import cli, engine
from transfer.depth.augment import DepthAugmentation, footprint
from transfer.depth.data import read_labelled
from transfer.depth.metrics import depth_metrics, pixel_sums
from transfer.depth.protocols import paper_depth

# 96x128 frames -> x0.5 -> 48x64 -> centre crop 32x48: conv5 of a ResNet is 1x2
TINY = ["--crop", "32", "48", "--max-steps", "3", "--batch-size", "4", "--device", "cpu"]
TINY += ["--num-workers", "0", "--ckpt", "random:resnet18"]


@pytest.fixture(scope="module")
def nyu(tmp_path_factory):
    """A labelled .mat of 10 frames (train 1-6, test 7-10) and a sync/ folder of 5 frames."""
    root = tmp_path_factory.mktemp("nyu")
    images, depths = pattern_images(10, height=96, width=128)
    write_labelled_mat(root / "labelled", images, depths, range(1, 7), range(7, 11))
    frames, frame_depths = pattern_images(5, height=96, width=128, seed=1)
    sync = write_frames(root / "raw", frames, frame_depths, ["bedroom_0001", "kitchen_0002"] * 3)
    return root / "labelled", sync


def test_labelled_training_is_its_own_protocol_and_lands_in_the_dense_table(nyu, tmp_path):
    labelled, _ = nyu
    records = tmp_path / "records"
    argv = [*TINY, "--data", str(labelled), "--train-source", "labelled"]
    result = run_cli("transfer.depth", *argv, "--records", str(records), check=True)
    (record,) = read_records(records)
    assert record.status == "complete" and record.task.family == "depth"
    assert (record.task.dataset, record.task.split) == ("nyu-v2", "test")
    # a deviation (the 795 labelled images) and shortened settings: never the paper's column
    assert record.task.protocol == "byol-paper-depth-labelled795-custom/1"
    selection = record.selection
    assert selection["train_source"] == "labelled" and selection["deviations"] == [
        "depth-labelled-795"
    ]
    assert (selection["train_images"], selection["eval_images"]) == (6, 4)
    assert selection["lr"] == pytest.approx(0.16 * 4 / 256)  # linear scaling from 0.16 at 256
    # the metrics are those of the stored per-image sums, pooled; intervals resample the images
    (per_image,) = record.examples["per_image"]
    sums = np.load(per_image["file"])
    assert hashlib.sha256(open(per_image["file"], "rb").read()).hexdigest() == per_image["sha256"]
    assert sums.shape == (4, 7) and record.examples["count"] == 4
    assert record.metrics == pytest.approx(depth_metrics(sums))
    assert set(record.intervals) == set(record.metrics)
    assert all(low <= high for low, high in record.intervals.values())
    assert sums[:, 0].sum() == 4 * 64 * 96  # every pixel of each test footprint is measured
    (dense,) = [t for t in build_tables(read_records(records)) if t.id == "dense"]
    column = "depth nyu-v2 test rms ↓ [byol-paper-depth-labelled795-custom/1]"
    assert column in dense.headers
    assert "rms" in result.stdout and "trained on labelled" in result.stdout
    # the report's pictures: the first test images' scored region, depth and prediction
    shown = load_recorded(selection["samples"])
    assert shown["kind"] == "depth" and shown["images"].shape == (4, 64, 96, 3)
    _, first_depth = read_labelled(labelled, "test").load(0)
    assert np.array_equal(shown["truth"][0], first_depth[16:80, 16:112].numpy())


def test_frames_train_the_paper_protocol_and_resume_exactly(nyu, tmp_path, monkeypatch):
    labelled, sync = nyu
    common = [*TINY, "--data", str(labelled), "--frames", str(sync), "--ckpt-every-min", "0"]
    cli.main([*common, "--records", str(tmp_path / "a"), "--run-dir", str(tmp_path / "run-a")])
    (straight,) = read_records(tmp_path / "a")
    assert straight.task.protocol == "byol-paper-depth-custom/1"  # shortened, frames
    assert straight.selection["train_set"] == ["nyu-frames", "train"]
    assert straight.selection["train_images"] == 5
    # the same run killed after its 2nd step, then the same command again: the same result
    real_step, calls = engine.train_step, []

    def dies_at_the_third_step(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("preempted")
        return real_step(*args)

    monkeypatch.setattr(engine, "train_step", dies_at_the_third_step)
    argv = [*common, "--records", str(tmp_path / "b"), "--run-dir", str(tmp_path / "run-b")]
    with pytest.raises(KeyboardInterrupt):
        cli.main(argv)
    monkeypatch.setattr(engine, "train_step", real_step)
    cli.main(argv)
    (resumed,) = read_records(tmp_path / "b")
    assert resumed.metrics == straight.metrics
    first = np.load(resumed.examples["per_image"][0]["file"])
    assert np.array_equal(first, np.load(straight.examples["per_image"][0]["file"]))


class ConstantDepth(nn.Module):
    """A 'network' predicting 2 m everywhere at a quarter of the input's resolution."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = images.shape
        return torch.full((batch, 1, height // 4, width // 4), 2.0)


def test_scoring_covers_the_inputs_footprint_at_full_resolution(nyu, tmp_path):
    labelled, _ = nyu
    test = read_labelled(labelled, "test")
    aug = DepthAugmentation(crop=(32, 48))
    protocol = paper_depth().__class__(aug=aug)
    job = engine.Job(protocol, 0.1, 0, test, test, tmp_path, "0" * 64, "cpu", num_workers=0)
    sums = engine.evaluate(ConstantDepth(), test, job)
    top, left, bottom, right = footprint(96, 128, aug)
    assert (top, left, bottom, right) == (16, 16, 80, 112)  # 48x64 crop of 96x128 at x0.5
    for row, index in zip(sums, range(len(test))):
        _, depth = test.load(index)
        region = depth[top:bottom, left:right]
        assert np.allclose(row, pixel_sums(torch.full_like(region, 2.0), region).numpy())


def test_protocol_names_follow_the_settings():
    def name(**given):
        return cli.resolve(cli.DepthConfig(ckpt="random:resnet18", **given))[0].name

    assert name() == "byol-paper-depth/1"  # the paper's: frames, 7,500 x 256, LR 0.16
    assert name(train_source="labelled") == "byol-paper-depth-labelled795/1"
    assert name(max_steps=10) == "byol-paper-depth-custom/1"
    assert name(lr=0.01) == "byol-paper-depth-custom/1"
    settings, lr = cli.resolve(cli.DepthConfig(ckpt="random:resnet18", batch_size=16))
    assert lr == pytest.approx(0.01)  # Laina's LR at Laina's batch: the scaling BYOL states


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "pass --frames with their folder"),
        (["--train-source", "labelled", "--data", "/nonexistent"], "nyu_depth_v2_labeled.mat"),
        (["--train-source", "labelled", "--crop", "16", "16"], "--crop >= 32"),
    ],
)
def test_bad_input_is_one_sentence(nyu, tmp_path, extra, message):
    labelled, _ = nyu
    data = [] if "--data" in extra else ["--data", str(labelled)]
    result = run_cli("transfer.depth", *TINY, *data, *extra, "--records", str(tmp_path))
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr


def test_frozen_linear_depth_probe_end_to_end(nyu, tmp_path, monkeypatch):
    """frozen-linear-depth on the labelled images: cached conv5 maps of the whole frames, two
    LRs chosen on held-out images by rms, a record with intervals in the dense table."""
    labelled, _ = nyu
    monkeypatch.setenv("BYOL_BENCH_CACHE", str(tmp_path / "cache"))
    records = tmp_path / "records"
    argv = ["--protocol", "frozen-linear-depth/1", "--train-source", "labelled"]
    argv += ["--data", str(labelled), "--epochs", "2", "--lrs", "0.005", "0.05"]
    argv += ["--heldout", "2", "--batch-size", "2", "--device", "cpu", "--num-workers", "0"]
    argv += ["--ckpt", "random:resnet18", "--records", str(records)]
    cli.main(argv)
    (record,) = read_records(records)
    assert record.task.protocol == "frozen-linear-depth-labelled795-custom/1"
    selection = record.selection
    assert [c["lr"] for c in selection["candidates"]] == [0.005, 0.05]
    assert selection["chosen_on"] == "heldout-2" and selection["train_source"] == "labelled"
    assert (
        selection["lr"]
        == min(selection["candidates"], key=lambda c: c["heldout_rms"] or float("inf"))["lr"]
    )
    assert selection["feature_shape"] == [512, 15, 20]  # whole 480x640 view, stride 32
    sums = np.load(record.examples["per_image"][0]["file"])
    assert sums.shape == (4, 7) and sums[:, 0].sum() == 4 * 480 * 640
    assert record.metrics == pytest.approx(depth_metrics(sums))
    shown = load_recorded(selection["samples"])  # the retrained probe on the first test images
    assert shown["kind"] == "depth" and shown["images"].shape == (4, 480, 640, 3)
    view = DenseView(480, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), crop=False)
    image, depth = view.resized(*read_labelled(labelled, "test").load(0))
    assert np.array_equal(shown["truth"][0], depth.numpy())
    assert np.array_equal(shown["images"][0], image.round().byte().permute(1, 2, 0).numpy())
    column = "depth nyu-v2 test rms ↓ [frozen-linear-depth-labelled795-custom/1]"
    (dense,) = [t for t in build_tables(read_records(records)) if t.id == "dense"]
    assert column in dense.headers
    # a second run reads the cached features: the encoder is not run again
    calls = []
    monkeypatch.setattr("transfer.dense_probe.features._extract", lambda *a, **k: calls.append(a))
    cli.main([*argv[:-1], str(tmp_path / "records-2")])
    assert calls == []


def test_probe_and_fine_tune_flags_do_not_mix():
    config = cli.DepthConfig(ckpt="random:resnet18", protocol="frozen-linear-depth/1", lr=0.1)
    with pytest.raises(Exception, match="--lr do"):
        cli.resolve(config)
    with pytest.raises(Exception, match="--epochs do"):
        cli.resolve(cli.DepthConfig(ckpt="random:resnet18", epochs=3))
    probe = cli.DepthConfig(ckpt="random:resnet18", protocol="frozen-linear-depth/1")
    assert cli.resolve(probe) == (cli.DEPTH_PROBE_PROTOCOLS["frozen-linear-depth/1"](), None)
