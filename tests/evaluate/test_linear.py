"""`python -m evaluate.linear` end to end on a tiny pretraining run: the contract's quick check,
the paper protocol, a failing run's record, a missing checkpoint."""

import hashlib

import pytest

from evaluate import linear
from results.record import read_records
from tests.conftest import run_cli
from tests.evaluate.conftest import only_record

FAST = ("--dataset", "synthetic", "--fast", "--num-workers", "0")


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


def test_paper_protocol_end_to_end(tiny_export, tmp_path):
    result = run_cli(
        "evaluate.linear",
        "--ckpt",
        str(tiny_export),
        "--dataset",
        "synthetic",
        "--epochs",
        "1",
        "--batch-size",
        "128",
        "--num-workers",
        "0",
        "--records",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = only_record(tmp_path)
    assert record.task.protocol == "byol-paper/1" and record.config["epochs"] == 1
    lr_scaled = [c["lr_scaled"] for c in record.selection["candidates"]]
    assert lr_scaled == pytest.approx([lr * 128 / 1024 for lr in (0.4, 0.3, 0.2, 0.1, 0.05)])


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


def test_fast_is_the_cached_centercrop_protocol_in_the_help():
    result = run_cli("evaluate.linear", "--help")
    assert result.returncode == 0 and "cached-centercrop/1" in result.stdout
