"""The probe loop: multi-head == single-head runs, divergence, the schedule, a depth stand-in."""

import math

import numpy as np
import pytest
import torch

from transfer.dense_probe.features import DenseFeatures
from transfer.dense_probe.train import (
    ProbeDivergedError,
    ProbeSchedule,
    depth_task,
    fit_probes,
    nyu_depth_schedule,
    probe_lr,
    run_probe,
    segmentation_task,
)

SCHEDULE = ProbeSchedule(epochs=3, batch_size=4)


def seg_data(count: int = 12, seed: int = 0) -> DenseFeatures:
    """Features that predict the label: class c lights channel c; labels 0..3 with IGNORE."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=(count, 2, 2))
    features = rng.normal(size=(count, 8, 2, 2)) * 0.1
    for c in range(4):
        features[:, c][labels == c] += 2.0
    targets = np.repeat(np.repeat(labels, 4, axis=1), 4, axis=2).astype(np.uint8)  # 8x8
    targets[:, 0, :] = 255
    return DenseFeatures(features.astype(np.float16), targets, {})


def depth_data(count: int = 10, seed: int = 0) -> DenseFeatures:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(count, 6, 2, 2)).astype(np.float16)
    depth = rng.uniform(0.5, 9.0, size=(count, 8, 8)).astype(np.float32)
    depth[:, 0, 0] = 0.0  # missing depth: not valid
    return DenseFeatures(features, depth, {})


def masked_l1(prediction, target, valid):
    return (prediction - target)[valid].abs().mean()


def abs_error_sums(prediction, target, valid):
    return torch.stack([(prediction - target)[valid].abs().sum(), valid.sum().float()])


def mae(sums):
    return {"mae": float(sums[0] / sums[1])}


def stand_in_depth_task():
    return depth_task(
        masked_l1, abs_error_sums, mae, channels=6, bins=16, max_depth=10.0, select="mae"
    )


@pytest.mark.parametrize("target", ["seg", "depth"])
def test_one_head_of_the_multi_head_run_equals_a_single_lr_run(target):
    task, data = (
        (segmentation_task(8, 4), seg_data())
        if target == "seg"
        else (stand_in_depth_task(), depth_data())
    )
    indices = np.arange(len(data))
    many, _ = fit_probes(task, data, indices, [1e-3, 3e-2, 1e-1], SCHEDULE, seed=3)
    one, _ = fit_probes(task, data, indices, [3e-2], SCHEDULE, seed=3)
    for name, value in one.heads[0].state_dict().items():
        assert torch.allclose(many.heads[1].state_dict()[name], value, atol=1e-6), name
    moved = many.heads[0].state_dict()
    assert any(not torch.allclose(moved[k], v) for k, v in one.heads[0].state_dict().items())
    other_seed, _ = fit_probes(task, data, indices, [3e-2], SCHEDULE, seed=4)
    assert any(
        not torch.allclose(other_seed.heads[0].state_dict()[k], v)
        for k, v in one.heads[0].state_dict().items()
    )


def test_warm_up_then_poly_or_cosine_to_zero():
    schedule = ProbeSchedule(epochs=1, warmup_fraction=0.1)
    assert probe_lr(0, 100, 1.0, schedule) == pytest.approx(1e-6)
    assert probe_lr(5, 100, 1.0, schedule) == pytest.approx(0.95 * (1 - 0.5 * (1 - 1e-6)))
    assert probe_lr(10, 100, 1.0, schedule) == pytest.approx(0.9)  # poly, power 1
    assert probe_lr(100, 100, 1.0, schedule) == 0.0
    depth = nyu_depth_schedule(24_576)  # 38,400 x 16 samples = 25 epochs of 24,576 images
    assert (depth.epochs, depth.weight_decay, depth.decay) == (25, 0.01, "cosine")
    assert probe_lr(50, 100, 1.0, depth) == pytest.approx(0.5)  # past the third: cosine
    assert (
        probe_lr(20, 100, 1.0, depth)
        < probe_lr(33, 100, 1.0, depth)
        == pytest.approx((1 + math.cos(math.pi * 0.33)) / 2)
    )


def test_a_diverging_lr_is_reported_and_not_chosen():
    data = seg_data(16)
    metrics, selection, counts = run_probe(
        segmentation_task(8, 4),
        data,
        seg_data(4, seed=1),
        np.array([1, 5, 9, 13]),
        [1e-2, 1e6],
        SCHEDULE,
        heldout_name="heldout-4",
    )
    good, huge = selection["candidates"]
    assert huge["lr"] == 1e6 and huge["diverged"] and huge["heldout_miou"] is None
    assert not good["diverged"] and good["heldout_miou"] > 50  # features predict the labels
    assert selection["lr"] == 1e-2 and selection["chosen_on"] == "heldout-4"
    assert counts.shape == (4, 3, 4) and metrics["miou"] > 50
    assert math.isfinite(selection["final_train_loss"])


def test_every_lr_diverging_is_one_sentence():
    with pytest.raises(ProbeDivergedError, match=r"every candidate LR \(1e\+06, 1e\+08\) diverged"):
        run_probe(
            segmentation_task(8, 4),
            seg_data(16),
            seg_data(4),
            np.array([0, 1]),
            [1e6, 1e8],
            SCHEDULE,
        )


def test_depth_probe_learns_with_a_stand_in_loss():
    data = depth_data(12)
    task = stand_in_depth_task()
    metrics, selection, sums = run_probe(
        task,
        data,
        depth_data(4, seed=1),
        np.array([0, 6]),
        [1e-3, 1e-1],
        ProbeSchedule(epochs=5, batch_size=4),
    )
    assert sums.shape == (4, 2) and sums[:, 1].sum() == 4 * 63  # every pixel but the missing one
    assert selection["candidates"][0]["heldout_mae"] is not None
    chosen = min(selection["candidates"], key=lambda c: c["heldout_mae"])
    assert selection["lr"] == chosen["lr"]  # lower is better for an error
    assert 0 < metrics["mae"] < 5  # uniform 0.5..9 m: the mean depth alone scores ~2.1
