"""`python -m evaluate.linear` end to end on a tiny pretraining run: the contract's quick check,
the paper protocol, a failing run's record, a missing checkpoint."""

import hashlib

import pytest
import torch

from evaluate import linear
from evaluate.heads import LinearHeads
from results.record import read_records
from tests.conftest import run_cli
from tests.evaluate.conftest import only_record
from tests.results.test_bootstrap import assert_intervals_follow_from_examples

FAST = ("--dataset", "synthetic", "--fast", "--num-workers", "0")
# byol-paper/2: App. C.1's grid and the authors' code's base LR 0.2 x 1024 / 256 = 0.8 around it
GRID_2 = (1.6, 1.2, 0.8, 0.4, 0.3, 0.2, 0.1, 0.05)


def test_contract_quick_check_linear_fast(tiny_export, tmp_path):
    """`python -m evaluate.linear --ckpt DIR/exports/backbone-*.pt --dataset synthetic --fast`."""
    records = ("--records", str(tmp_path))
    result = run_cli("evaluate.linear", "--ckpt", str(tiny_export), *FAST, *records)
    assert result.returncode == 0, result.stderr[-3000:]
    record = only_record(tmp_path)
    assert (record.task.family, record.task.protocol) == ("linear", "cached-centercrop/2")
    assert (record.task.dataset, record.task.split) == ("synthetic", "test")
    assert tiny_export.name == f"backbone-{record.checkpoint.weights_sha256[:8]}.pt"
    assert record.checkpoint.method == "byol" and record.checkpoint.arch == "resnet18"
    selection = record.selection
    assert [c["lr"] for c in selection["candidates"]] == list(GRID_2)
    assert selection["lr"] in GRID_2 and selection["chosen_on"] == "heldout-50"
    with open(selection["heldout_split_file"], "rb") as split_file:
        assert hashlib.sha256(split_file.read()).hexdigest() == selection["heldout_split_sha256"]
    assert record.provenance.wall_seconds > 0 and record.config["fast"] is True
    assert f"top1 {record.metrics['top1']:.2f}" in result.stdout
    assert_intervals_follow_from_examples(record, ("top1", "top5"))


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
    assert record.task.protocol == "byol-paper/2" and record.config["epochs"] == 1
    lr_scaled = [c["lr_scaled"] for c in record.selection["candidates"]]
    assert lr_scaled == pytest.approx([lr * 128 / 1024 for lr in GRID_2])


def test_a_failing_run_still_ends_in_one_record(tmp_path, monkeypatch):
    def broken(*_args):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(linear, "run_probe", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        linear.main(["--ckpt", "random:resnet18", *FAST, "--records", str(tmp_path)])
    (record,) = read_records(tmp_path)
    assert record.status == "failed" and record.error == "RuntimeError: out of memory"
    assert record.metrics == {} and record.task.protocol == "cached-centercrop/2"


def test_missing_checkpoint_is_a_clear_cli_error(tmp_path):
    missing = tmp_path / "exports" / "backbone-00000000.pt"
    result = run_cli("evaluate.linear", "--ckpt", str(missing), *FAST, "--records", str(tmp_path))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"error: checkpoint {missing} does not exist" in result.stderr


def test_fast_is_the_cached_centercrop_protocol_in_the_help():
    result = run_cli("evaluate.linear", "--help")
    assert result.returncode == 0 and "cached-centercrop/2" in result.stdout


def test_the_sweep_trains_and_scores_every_candidate_lr(tmp_path, monkeypatch):
    """run_probe hands every candidate LR to one sweep, and each candidate's held-out accuracy is
    its own head's (guards against training the first LR only and copying its accuracy)."""
    fits, scores = [], []
    real_fit, real_evaluate = linear.fit, linear.evaluate_heads

    def spy_fit(config, inputs, batches, lrs, desc):
        heads = real_fit(config, inputs, batches, lrs, desc)
        fits.append((list(lrs), heads))
        return heads

    def spy_evaluate(heads, features, labels):
        results = real_evaluate(heads, features, labels)
        scores.append(
            [real_evaluate(head_only(heads, i), features, labels)[0] for i in range(len(results))]
        )
        return results

    def head_only(heads, index):
        single = LinearHeads(1, heads.heads[0].in_features, heads.heads[0].out_features, seed=0)
        single.heads[0].load_state_dict(heads.heads[index].state_dict())
        return single

    monkeypatch.setattr(linear, "fit", spy_fit)
    monkeypatch.setattr(linear, "evaluate_heads", spy_evaluate)
    linear.main(["--ckpt", "random:resnet18", *FAST, "--records", str(tmp_path)])
    record = only_record(tmp_path)
    sweep_lrs, sweep = fits[0]
    assert sweep_lrs == pytest.approx(list(GRID_2))  # every candidate, at batch 1024
    assert len(sweep.heads) == len(GRID_2)
    weights = [head.weight.detach() for head in sweep.heads]
    assert all(not torch.equal(weights[i], weights[j]) for i in range(8) for j in range(i))
    candidates = record.selection["candidates"]
    heldout = [c["heldout_top1"] for c in candidates]
    assert heldout == pytest.approx([result["top1"] for result in scores[0]])  # each its own head
    assert len(set(heldout)) > 1  # and the LRs really led to different accuracies
