"""`python -m transfer.segmentation` end to end on tiny VOC2012 / ADE20K trees, and bad input."""

import hashlib
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from results.published import SEGMENTATION_PROTOCOL
from results.record import read_records
from results.samples import load_samples
from tests.conftest import run_cli
from tests.transfer.segmentation.layouts import make_ade20k, make_export, make_voc
from transfer.segmentation import cli as segmentation
from transfer.segmentation.data import build_segmentation_set

TINY = [
    "--device",
    "cpu",
    "--num-workers",
    "0",
    "--max-steps",
    "2",
    "--batch-size",
    "2",
    "--crop",
    "48",
]


def test_voc_protocol_sweep_seeds_and_one_record(tmp_path, capsys):
    voc = make_voc(tmp_path, train=5, val=2)
    export = make_export(tmp_path)
    args = [
        "--ckpt",
        str(export),
        "--data",
        str(voc),
        *TINY,
        "--lrs",
        "0.01",
        "0.1",
        "--seeds",
        "0",
        "--heldout",
        "2",
        "--records",
        str(tmp_path / "records"),
    ]
    segmentation.main(args)
    (record,) = read_records(tmp_path / "records")  # validated on read
    assert record.status == "complete" and record.kind == "eval"
    task = record.task
    assert (task.family, task.dataset, task.split) == ("segmentation", "voc2012", "val")
    assert task.protocol == SEGMENTATION_PROTOCOL == "byol-paper-fcn/1"  # pairs with the paper
    selection = record.selection
    assert [c["lr"] for c in selection["candidates"]] == [0.01, 0.1]
    assert selection["chosen_on"] == "heldout-2" and selection["lr"] in (0.01, 0.1)
    assert record.metrics["miou"] == selection["seeds"][0]["miou"]
    # the bootstrap interval over the 2 val images, from the final run's per-image counts
    (kept,) = record.examples["per_image"]
    assert hashlib.sha256(open(kept["file"], "rb").read()).hexdigest() == kept["sha256"]
    low, high = record.intervals["miou"]
    assert 0 <= low <= high <= 100 and record.examples["count"] == 2
    assert record.config["settings"]["iterations"] == 2 and record.config["settings"]["crop"] == 48
    # the report's pictures: the first seed's final run keeps the 2 val images, in order
    check_samples(record.selection["samples"], voc, f"final-lr{selection['lr']:g}-seed0")
    assert record.checkpoint.weights_sha256.startswith(export.stem.split("-")[1])
    assert f"mIoU {record.metrics['miou']:.2f}" in capsys.readouterr().out
    assert sorted(p.name for p in Path(selection["run_dir"]).iterdir()) == [
        f"final-lr{selection['lr']:g}-seed0",
        "sweep-lr0.01-seed0",
        "sweep-lr0.1-seed0",
    ]
    segmentation.main(args)  # finished runs are reused: same number, a second record
    again = [r for r in read_records(tmp_path / "records") if r.record_id != record.record_id]
    assert again[0].metrics == record.metrics


def test_ade20k_semantic_fpn(tmp_path):
    ade = make_ade20k(tmp_path, train=2, val=1)
    segmentation.main(
        [
            "--ckpt",
            "random:resnet18",
            "--protocol",
            "ade20k-semfpn-80k/1",
            "--data",
            str(ade),
            *TINY,
            "--max-steps",
            "1",
            "--records",
            str(tmp_path / "records"),
        ]
    )
    (record,) = read_records(tmp_path / "records")
    assert (record.task.dataset, record.task.split) == ("ade20k", "val")
    assert (
        record.task.protocol == "ade20k-semfpn-80k/1" and record.selection["chosen_on"] == "given"
    )
    assert record.checkpoint.method == "random-init"
    images = load_samples(record.selection["samples"]["file"])["images"]
    assert images.shape == (1, 64, 96, 3)  # the original image, not the input rescaled to 512


def check_samples(entry: dict, voc: Path, final_dir: str) -> None:
    """The samples file is the record's (sha256), of the final run, and holds the val images
    in order: each original image and label as loaded (no crop: they are under 513 px), padded
    to the larger one, and an argmax prediction of their size."""
    path = Path(entry["file"])
    assert path.parent.name == final_dir and path.name == "samples.npz"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    samples = load_samples(path)
    assert samples["kind"] == "segmentation" and len(samples["images"]) == 2
    val = build_segmentation_set("voc2012", str(voc), "val")
    for index in range(2):
        image, label = val.load(index)
        height, width = label.shape
        assert np.array_equal(samples["truth"][index, :height, :width], label.numpy())
        assert np.array_equal(samples["images"][index, :height, :width], image.permute(1, 2, 0))
        prediction = samples["prediction"][index]
        assert prediction[:height, :width].max() < 21 and (prediction[height:] == 255).all()


def test_voc_dir_without_imagesets_exits_with_a_sentence(tmp_path):
    voc = make_voc(tmp_path, train=2, val=1)
    shutil.rmtree(voc / "ImageSets")
    result = run_cli(
        "transfer.segmentation",
        "--ckpt",
        "random:resnet18",
        "--data",
        str(voc),
        "--records",
        str(tmp_path / "records"),
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "has no ImageSets/Segmentation" in result.stderr
    assert not (tmp_path / "records").exists()  # refused before the run: no record


def test_unknown_protocol_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        segmentation.main(["--ckpt", "random:resnet18", "--protocol", "voc-deeplab/9"])
    assert (
        exit_info.value.code == 2 and "invalid choice: 'voc-deeplab/9'" in capsys.readouterr().err
    )
    config = segmentation.SegmentationConfig(ckpt="random:resnet18", protocol="voc-deeplab/9")
    with pytest.raises(segmentation.harness.InputError, match="unknown protocol 'voc-deeplab/9'"):
        segmentation.resolve(config)


def test_label_png_of_another_size_names_the_file(tmp_path):
    voc = make_voc(tmp_path, train=2, val=1)
    label = voc / "SegmentationClass" / "2007_000002.png"
    Image.new("P", (10, 12)).save(label)
    with pytest.raises(SystemExit) as exit_info:
        segmentation.main(["--ckpt", "random:resnet18", "--data", str(voc), *TINY])
    message = str(exit_info.value.code)
    assert message.startswith("error: label") and str(label) in message and "10x12 px" in message


def test_slurm_submits_the_same_command_through_the_shared_helper(monkeypatch, capsys):
    submitted = {}

    def submit(profile, fn, command, name, folder=None, after=()):
        submitted.update(command=command, name=name, after=list(after))
        return SimpleNamespace(job_id="42", paths=SimpleNamespace(stdout="out", stderr="err"))

    monkeypatch.setattr(segmentation.slurm_submit, "submit", submit)
    argv = ["--ckpt", "x.pt", "--data", "/data/VOC2012", "--lrs", "0.01"]
    segmentation.main([*argv, "--slurm", "--profile", "local", "--after", "7"])
    assert submitted["command"][1:3] == ["-m", "transfer.segmentation"]
    assert submitted["command"][3:] == argv and submitted["after"] == ["7"]
    assert "submitted SLURM job 42" in capsys.readouterr().out


def test_default_work_dir_is_under_runs_evals_not_records(tmp_path):
    voc = make_voc(tmp_path, train=2, val=1)
    argv = ["--ckpt", "random:resnet18", "--data", str(voc), *TINY]
    config = segmentation.parse_config([*argv, "--records", str(tmp_path / "records")])
    inputs = segmentation.load_inputs(replace(config, settings=segmentation.resolve(config)))
    sha8 = inputs.metadata["weights_sha256"][:8]
    expected = tmp_path / "evals" / "segmentation" / "byol-paper-fcn-v1" / sha8
    assert inputs.work_dir == expected and inputs.records_dir == tmp_path / "records"
    assert (inputs.eval_split, inputs.preprocessing.image_size) == ("val", 48)
    assert inputs.preprocessing.mean == (0.485, 0.456, 0.406)  # no statistics in random: weights


def test_fast_is_refused():
    result = run_cli("transfer.segmentation", "--ckpt", "random:resnet18", "--fast")
    assert result.returncode == 2 and "unrecognized arguments: --fast" in result.stderr
