"""Monocular depth metrics: delta < 1.25^n, rms, rel (BYOL v3 Table 4) and log10, pooled.

With d the prediction and d* the ground truth, over the valid pixels (d* > 0 and finite):
    delta_n = % of pixels with max(d / d*, d* / d) < 1.25^n, n = 1, 2, 3   (BYOL v3, Sec. 4)
    rms     = sqrt(mean (d - d*)^2)            rms, rel and log10: Laina et al. 2016's
    rel     = mean |d - d*| / d*                matlab/error_metrics.m in
    log10   = mean |log10 d - log10 d*|         iro-cp/FCRN-DepthPrediction
Laina's evaluateNYU.m pools every pixel of every test image before averaging (it does not average
per-image metrics), so an image's contribution is seven sums (`pixel_sums`) that add up over
images; `depth_metrics` turns summed sums into the metrics. Predictions are clamped to at least
MIN_PREDICTION (1 mm, DINOv2's min_depth) before the ratios and logs, so a zero or negative
prediction counts as a (large) error instead of dividing by zero.

The 95% interval (`depth_interval`) resamples images with replacement (results/bootstrap.py's
percentile bootstrap) and re-pools the resampled images' sums.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from results import bootstrap

MIN_PREDICTION = 1e-3  # metres; DINOv2's NYU min_depth
DELTA_BASE = 1.25
METRIC_ORDER = ("delta1", "delta2", "delta3", "rms", "rel")  # BYOL v3 Table 4's columns
HIGHER_IS_BETTER = {
    "delta1": True,
    "delta2": True,
    "delta3": True,
    "rms": False,
    "rel": False,
    "log10": False,
}
SUM_FIELDS = ("pixels", "delta1", "delta2", "delta3", "squared_error", "abs_rel", "abs_log10")


def valid_pixels(truth: torch.Tensor) -> torch.Tensor:
    """Where the ground truth is a measurement: d* > 0 and finite."""
    return torch.isfinite(truth) & (truth > 0)


def pixel_sums(prediction: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """float64 [7] of one image (SUM_FIELDS): the valid-pixel count, the counts within 1.25,
    1.25^2, 1.25^3, and the sums of squared error, |d - d*| / d* and |log10 d - log10 d*|."""
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and truth {tuple(truth.shape)}")
    valid = valid_pixels(truth)
    truth = truth[valid].double()
    prediction = prediction.detach()[valid].double().clamp(min=MIN_PREDICTION)
    ratio = torch.maximum(prediction / truth, truth / prediction)
    within = [(ratio < DELTA_BASE**n).sum() for n in (1, 2, 3)]
    error = prediction - truth
    return torch.stack(
        [
            torch.tensor(float(truth.numel()), dtype=torch.float64),
            *(count.double() for count in within),
            error.square().sum(),
            (error.abs() / truth).sum(),
            (prediction.log10() - truth.log10()).abs().sum(),
        ]
    ).cpu()


def depth_metrics(sums) -> dict[str, float]:
    """The metrics of pixel_sums [7], or of [N, 7] per-image sums pooled over the N images:
    delta1..3 in percent, rms in metres, rel and log10 as fractions."""
    sums = np.asarray(sums, dtype=np.float64)
    if sums.ndim == 2:
        sums = sums.sum(axis=0)
    if sums.shape != (len(SUM_FIELDS),):
        raise ValueError(f"pixel sums must be [7] or [N, 7], not {sums.shape}")
    pixels = sums[0]
    if pixels <= 0:
        raise ValueError("no valid ground-truth pixels: the depth metrics are undefined")
    return {
        "delta1": 100.0 * sums[1] / pixels,
        "delta2": 100.0 * sums[2] / pixels,
        "delta3": 100.0 * sums[3] / pixels,
        "rms": math.sqrt(sums[4] / pixels),
        "rel": sums[5] / pixels,
        "log10": sums[6] / pixels,
    }


def depth_interval(per_image_sums: np.ndarray, **kwargs) -> dict[str, list[float]]:
    """{metric: [low, high]}: the 95% percentile bootstrap over images of each pooled metric
    (results/bootstrap.py's interval; every metric sees the same resamples for one seed)."""
    per_image_sums = np.asarray(per_image_sums, dtype=np.float64)
    count = len(per_image_sums)
    intervals = {}
    for name in HIGHER_IS_BETTER:

        def statistic(index: np.ndarray, name: str = name) -> float:
            return depth_metrics(per_image_sums[index].sum(axis=0))[name]

        intervals[name] = list(bootstrap.interval(statistic, count, **kwargs))
    return intervals
