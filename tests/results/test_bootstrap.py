"""95% bootstrap intervals (results/bootstrap.py) against numpy resampling written out here,
and their place in records."""

import dataclasses

import numpy as np
import pytest

from results import bootstrap
from results.record import RecordError, validate
from tests.results.test_record import make_record


def reference_interval(statistic, count, seed=0, resamples=1000):
    """Independent percentile bootstrap: numpy, the same seed, one draw per resample."""
    rng = np.random.default_rng(seed)
    values = [statistic(rng.integers(0, count, size=count)) for _ in range(resamples)]
    return np.percentile(values, 2.5), np.percentile(values, 97.5)


def test_accuracy_interval_matches_numpy_resampling_and_contains_the_estimate():
    correct = np.random.default_rng(3).random(500) < 0.7
    low, high = bootstrap.accuracy_interval(correct)
    expected = reference_interval(lambda index: 100 * correct[index].mean(), 500)
    assert (low, high) == pytest.approx(expected, abs=1e-9)
    assert low < 100 * correct.mean() < high
    # binomial standard error sqrt(p (1 - p) / N) ~ 2.05 points: the 95% interval is ~ +- 4
    assert high - low == pytest.approx(2 * 1.96 * 100 * np.sqrt(0.7 * 0.3 / 500), rel=0.15)


def test_the_interval_shrinks_with_more_examples():
    rng = np.random.default_rng(0)
    widths = []
    for count in (200, 2_000, 20_000):
        low, high = bootstrap.accuracy_interval(rng.random(count) < 0.6, resamples=300)
        widths.append(high - low)
    assert widths[0] > 2.5 * widths[1] > 2.5 * 2.5 * widths[2]  # ~ 1 / sqrt(N): x3.16 per step


def test_mean_per_class_interval_matches_numpy_resampling():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 300)
    correct = rng.random(300) < np.array([0.9, 0.5, 0.7, 0.2])[labels]

    def mean_per_class(index):
        picked, hits = labels[index], correct[index]
        return 100 * np.mean([hits[picked == c].mean() for c in np.unique(picked)])

    expected = reference_interval(mean_per_class, 300, seed=0)
    assert bootstrap.mean_per_class_interval(correct, labels) == pytest.approx(expected, abs=1e-9)


def test_another_seed_draws_other_resamples():
    correct = np.random.default_rng(2).random(400) < 0.5
    assert bootstrap.accuracy_interval(correct, seed=1) != bootstrap.accuracy_interval(correct)


def test_bits_and_labels_round_trip_compactly():
    bits = np.random.default_rng(4).random(1001) < 0.5
    text = bootstrap.pack_bits(bits)
    assert len(text) <= 4 * (-(-1001 // 8) + 2) // 3 + 4  # base64 of 126 bytes
    assert np.array_equal(bootstrap.unpack_bits(text, 1001), bits)
    labels = np.array([0, 5, 399, 65_535])
    assert np.array_equal(bootstrap.unpack_labels(bootstrap.pack_labels(labels)), labels)


def test_the_interval_can_be_recomputed_from_the_record_alone():
    correct = np.random.default_rng(5).random(300) < 0.8
    examples = {"count": 300, "bootstrap": bootstrap.settings()}
    examples["correct"] = {"top1": bootstrap.pack_bits(correct)}
    bits = bootstrap.unpack_bits(examples["correct"]["top1"], examples["count"])
    assert bootstrap.accuracy_interval(bits) == bootstrap.accuracy_interval(correct)


@pytest.mark.parametrize(
    "intervals, message",
    [
        ({"map11": [70.0, 72.0]}, "a metric the record lacks"),
        ({"top1": [75.0, 73.0]}, "low <= high"),
        ({"top1": [73.0, 101.0]}, "low <= high <= 100"),
        ({"top1": [73.0]}, "is not \\[low, high\\]"),
    ],
)
def test_records_refuse_malformed_intervals(intervals, message):
    record = make_record()
    validate(dataclasses.replace(record, intervals={"top1": [73.0, 75.0]}))
    with pytest.raises(RecordError, match=message):
        validate(dataclasses.replace(record, intervals=intervals))


def assert_intervals_follow_from_examples(record, names) -> None:
    """An evaluation record's intervals are the bootstrap of the per-example bits it stores, and
    those bits give its metrics (used by the evaluation CLIs' tests)."""
    examples = record.examples
    assert examples["bootstrap"] == bootstrap.settings()
    for name in names:
        bits = bootstrap.unpack_bits(examples["correct"][name], examples["count"])
        assert 100 * bits.mean() == pytest.approx(record.metrics[name])
        expected = bootstrap.accuracy_interval(bits)
        assert record.intervals[name] == pytest.approx(list(expected), abs=1e-3)
