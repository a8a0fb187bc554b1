"""95% bootstrap intervals of evaluation metrics, and the per-example data they are drawn from
(no torch import: records and tables stay torch-free).

Method (Efron & Tibshirani 1993, the percentile interval): draw `resamples` = 1,000 sets of N
examples with replacement from the N evaluated examples (numpy's default_rng(seed), one
`integers(0, N, N)` draw per resample, in order), compute the metric on each by its own
definition (top-1, mean per-class accuracy, 11-point mAP, ...), and report the 2.5th and 97.5th
percentiles (numpy's linear interpolation). The data a top-k interval needs is stored in the
record, compactly: one bit per example and metric (`pack_bits`, base64 of numpy.packbits), and
class labels as base64 little-endian uint16 where a per-class metric needs them, so anyone can
recompute the interval from the record alone (`accuracy_interval`).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95
SEED = 0
METHOD = "percentile bootstrap over the evaluated examples"


def settings(resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL) -> dict:
    """The record's description of how its intervals were drawn."""
    return {"method": METHOD, "resamples": resamples, "seed": seed, "level": level}


def pack_bits(values: Sequence[bool] | np.ndarray) -> str:
    """Booleans as base64 text of their packed bits (8 examples per byte)."""
    return base64.b64encode(np.packbits(np.asarray(values, dtype=bool)).tobytes()).decode()


def unpack_bits(text: str, count: int) -> np.ndarray:
    """The `count` booleans pack_bits wrote."""
    packed = np.frombuffer(base64.b64decode(text), dtype=np.uint8)
    return np.unpackbits(packed)[:count].astype(bool)


def pack_labels(labels: Sequence[int] | np.ndarray) -> str:
    """Class indices (< 65,536) as base64 text of little-endian uint16."""
    return base64.b64encode(np.asarray(labels, dtype="<u2").tobytes()).decode()


def unpack_labels(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<u2").astype(np.int64)


def interval(
    statistic: Callable[[np.ndarray], float],
    count: int,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> tuple[float, float]:
    """(low, high): the percentile interval of `statistic(indices)` over `resamples` draws of
    `count` example indices with replacement (the module docstring's method)."""
    if count < 1:
        raise ValueError("a bootstrap needs at least one example")
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, count, count)) for _ in range(resamples)])
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def accuracy_interval(correct: np.ndarray, **kwargs) -> tuple[float, float]:
    """Interval of the percentage of correct examples (top-1, top-5, kNN, ...)."""
    correct = np.asarray(correct, dtype=np.float64)
    return _percent(interval(lambda index: correct[index].mean(), len(correct), **kwargs))


def mean_per_class_interval(correct: np.ndarray, labels: np.ndarray, **kwargs):
    """Interval of the per-class accuracy averaged over the classes present in each resample."""
    correct, labels = np.asarray(correct, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    width = int(labels.max()) + 1

    def statistic(index: np.ndarray) -> float:
        hits = np.bincount(labels[index], weights=correct[index], minlength=width)
        seen = np.bincount(labels[index], minlength=width)
        present = seen > 0
        return float((hits[present] / seen[present]).mean())

    return _percent(interval(statistic, len(correct), **kwargs))


def _percent(bounds: tuple[float, float]) -> tuple[float, float]:
    return 100.0 * bounds[0], 100.0 * bounds[1]
