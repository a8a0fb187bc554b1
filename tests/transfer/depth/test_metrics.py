"""Depth metrics against hand-computed cases, pooling over images, and the bootstrap interval."""

import math

import numpy as np
import pytest
import torch

from transfer.depth.metrics import (
    HIGHER_IS_BETTER,
    METRIC_ORDER,
    depth_interval,
    depth_metrics,
    pixel_sums,
)


def test_a_perfect_prediction_scores_100_percent_and_zero_error():
    truth = torch.rand(6, 7) * 9 + 0.5
    metrics = depth_metrics(pixel_sums(truth.clone(), truth))
    assert metrics["delta1"] == metrics["delta2"] == metrics["delta3"] == 100.0
    assert metrics["rms"] == metrics["rel"] == metrics["log10"] == 0.0
    assert METRIC_ORDER == ("delta1", "delta2", "delta3", "rms", "rel")
    assert set(METRIC_ORDER) < set(HIGHER_IS_BETTER) and not HIGHER_IS_BETTER["rms"]


def test_a_hand_computed_case_for_every_metric():
    # valid pixels (d, d*): (1.2, 1), (1.05, 2), (5, 4); d* = 0 and NaN are not scored
    truth = torch.tensor([[1.0, 2.0, 4.0], [0.0, float("nan"), 3.0]])
    prediction = torch.tensor([[1.2, 1.05, 5.0], [7.0, 1.0, 3.0]])
    sums = pixel_sums(prediction, truth)
    assert sums.dtype == torch.float64 and sums.shape == (7,)
    metrics = depth_metrics(sums)
    # max(d/d*, d*/d) = 1.2, 1.9048, 1.25, 1: delta < 1.25 is strict, so 1.25 fails delta1
    assert metrics["delta1"] == pytest.approx(100 * 2 / 4)
    assert metrics["delta2"] == pytest.approx(100 * 3 / 4)
    assert metrics["delta3"] == pytest.approx(100 * 4 / 4)
    assert metrics["rms"] == pytest.approx(math.sqrt((0.2**2 + 0.95**2 + 1.0**2 + 0) / 4))
    assert metrics["rel"] == pytest.approx((0.2 / 1 + 0.95 / 2 + 1 / 4 + 0) / 4)
    log_errors = [math.log10(1.2), math.log10(2 / 1.05), math.log10(5 / 4), 0.0]
    assert metrics["log10"] == pytest.approx(sum(log_errors) / 4)


def test_a_zero_prediction_is_clamped_to_one_millimetre():
    metrics = depth_metrics(pixel_sums(torch.tensor([0.0, -1.0]), torch.tensor([1.0, 1.0])))
    assert metrics["delta3"] == 0.0 and metrics["rel"] == pytest.approx(0.999)
    assert metrics["log10"] == pytest.approx(3.0)  # |log10 0.001 - log10 1|


def test_pooling_over_images_is_not_the_mean_of_per_image_metrics():
    one_wrong = pixel_sums(torch.tensor([2.0]), torch.tensor([1.0]))  # rel 1 on 1 pixel
    three_right = pixel_sums(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0]))
    pooled = depth_metrics(torch.stack([one_wrong, three_right]))
    assert pooled["rel"] == pytest.approx(1 / 4)  # 4 pixels pooled (Laina's evaluateNYU.m)
    per_image_mean = (depth_metrics(one_wrong)["rel"] + depth_metrics(three_right)["rel"]) / 2
    assert per_image_mean == pytest.approx(0.5) and pooled["rel"] != per_image_mean
    assert pooled["delta1"] == pytest.approx(75.0) and pooled["rms"] == pytest.approx(0.5)


def test_no_valid_pixel_is_refused():
    with pytest.raises(ValueError, match="no valid ground-truth pixels"):
        depth_metrics(pixel_sums(torch.ones(2, 2), torch.zeros(2, 2)))


def test_the_interval_is_the_numpy_bootstrap_over_images():
    rng = np.random.default_rng(7)
    per_image = []
    for _ in range(40):
        truth = torch.from_numpy(rng.uniform(0.5, 8, (5, 6)))
        noise = torch.from_numpy(rng.normal(1, 0.2, (5, 6))).clamp(min=0.3)
        per_image.append(pixel_sums(truth * noise, truth))
    per_image = torch.stack(per_image).numpy()
    intervals = depth_interval(per_image)
    assert set(intervals) == set(HIGHER_IS_BETTER)

    # independent resampling: numpy, seed 0, one integers(0, N, N) draw per resample
    draws = np.random.default_rng(0)
    values = {name: [] for name in intervals}
    for _ in range(1000):
        picked = per_image[draws.integers(0, 40, size=40)]
        count = picked[:, 0].sum()
        values["delta1"].append(100 * picked[:, 1].sum() / count)
        values["delta2"].append(100 * picked[:, 2].sum() / count)
        values["delta3"].append(100 * picked[:, 3].sum() / count)
        values["rms"].append(np.sqrt(picked[:, 4].sum() / count))
        values["rel"].append(picked[:, 5].sum() / count)
        values["log10"].append(picked[:, 6].sum() / count)
    for name, samples in values.items():
        expected = np.percentile(samples, [2.5, 97.5])
        assert intervals[name] == pytest.approx(list(expected), abs=1e-9), name
    estimate = depth_metrics(per_image)
    assert all(low < estimate[name] < high for name, (low, high) in intervals.items())
