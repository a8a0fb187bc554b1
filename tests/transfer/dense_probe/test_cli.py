"""`python -m transfer.segmentation --protocol frozen-linear-seg/1` end to end, its table column,
the ADE20K variant, and bad input."""

import hashlib

import numpy as np
import pytest

from results import tables
from results.record import read_records
from results.samples import load_recorded
from tests.conftest import run_cli
from tests.transfer.segmentation.layouts import make_ade20k, make_voc
from transfer.segmentation import cli as segmentation

TINY = ["--device", "cpu", "--num-workers", "0", "--epochs", "2", "--batch-size", "2"]


def test_voc_probe_end_to_end_writes_a_record_and_its_own_table_column(tmp_path, capsys):
    voc = make_voc(tmp_path, train=5, val=2)
    records, cache = tmp_path / "records", tmp_path / "cache"
    result = run_cli(
        "transfer.segmentation",
        *["--protocol", "frozen-linear-seg/1", "--ckpt", "random:resnet18", "--data", str(voc)],
        *TINY,
        *["--crop", "64", "--lrs", "0.001", "0.01", "--heldout", "2"],
        *["--records", str(records), "--cache-dir", str(cache)],
        check=True,
    )
    assert "mIoU" in result.stdout and "frozen linear probe" in result.stdout
    (record,) = read_records(records)
    task = record.task
    assert (task.family, task.dataset, task.split) == ("segmentation", "voc2012", "val")
    assert task.protocol == "frozen-linear-seg/1" and record.status == "complete"
    selection = record.selection
    assert [c["lr"] for c in selection["candidates"]] == [0.001, 0.01]
    assert all(c["heldout_miou"] is not None for c in selection["candidates"])
    assert selection["chosen_on"] == "heldout-2" and selection["lr"] in (0.001, 0.01)
    assert selection["view"].startswith("dense-centrecrop/1:size=64")
    assert selection["schedule"]["epochs"] == 2 and selection["feature_shape"] == [512, 2, 2]
    low, high = record.intervals["miou"]  # (2 images: the estimate need not lie inside)
    assert 0 <= low <= high <= 100
    shown = load_recorded(selection["samples"])  # the report's pictures: the view, as scored
    assert shown["kind"] == "segmentation" and shown["images"].shape == (2, 64, 64, 3)
    assert set(np.unique(shown["prediction"])) <= set(range(21))
    (kept,) = record.examples["per_image"]
    assert hashlib.sha256(open(kept["file"], "rb").read()).hexdigest() == kept["sha256"]
    assert record.examples["count"] == 2
    assert len(list(cache.glob("*.json"))) == 2  # train_aug and val, one pass each

    tables.main(["--records", str(records), "--table", "dense"])
    out = capsys.readouterr().out
    ours = next(line for line in out.splitlines() if "random-init resnet18" in line)
    header = next(line for line in out.splitlines() if line.startswith("| method"))
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    cells = [cell.strip() for cell in ours.strip("|").split("|")]
    probe = columns.index("segmentation voc2012 val mIoU [frozen-linear-seg/1]")
    fine_tune = columns.index("segmentation voc2012 val mIoU [byol-paper-fcn/1]")
    assert cells[probe] == f"{record.metrics['miou']:.1f}" and cells[fine_tune] == "missing"


def test_ade20k_probe_with_one_lr(tmp_path):
    ade = make_ade20k(tmp_path, train=2, val=1)
    segmentation.main(
        [
            *["--protocol", "frozen-linear-seg-ade20k/1", "--ckpt", "random:resnet18"],
            *["--data", str(ade), *TINY, "--crop", "64", "--lrs", "0.01"],
            *["--records", str(tmp_path / "records"), "--cache-dir", str(tmp_path / "cache")],
        ]
    )
    (record,) = read_records(tmp_path / "records")
    assert (record.task.dataset, record.task.protocol) == ("ade20k", "frozen-linear-seg-ade20k/1")
    assert record.selection["chosen_on"] == "given" and record.selection["candidates"] == []


def test_unknown_protocol_and_fine_tune_flags_are_one_sentence(tmp_path):
    result = run_cli("transfer.segmentation", "--ckpt", "random:resnet18", "--protocol", "nope/1")
    assert result.returncode == 2 and "invalid choice: 'nope/1'" in result.stderr
    assert "Traceback" not in result.stderr and "frozen-linear-seg/1" in result.stderr
    with pytest.raises(SystemExit) as exit_info:
        segmentation.main(
            ["--ckpt", "random:resnet18", "--protocol", "frozen-linear-seg/1", "--max-steps", "5"]
        )
    assert str(exit_info.value.code).startswith(
        "error: frozen-linear-seg/1 trains a probe on cached features: use --epochs"
    )
    with pytest.raises(SystemExit) as exit_info:
        segmentation.main(["--ckpt", "random:resnet18", "--epochs", "5"])
    assert str(exit_info.value.code) == (
        "error: --epochs is for the frozen-linear-seg* protocols; use --max-steps"
    )
    config = segmentation.SegmentationConfig(ckpt="random:resnet18", protocol="nope/1")
    with pytest.raises(segmentation.harness.InputError, match="frozen-linear-seg-ade20k/1"):
        segmentation.resolve(config)
    assert not (tmp_path / "records").exists()
