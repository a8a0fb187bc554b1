"""Depth regression losses: berHu (BYOL v3 App. D.6 after Laina et al. 2016) and DINOv2's
frozen-probe losses (SigLoss + 0.5 GradientLoss).

Every loss takes prediction and target of one shape ([B, H, W], [B, 1, H, W] or [H, W], depth
in metres) and a boolean `valid` mask of that shape (pixels with a ground-truth measurement,
normally target > 0); only valid pixels contribute.
"""

from __future__ import annotations

import torch

BERHU_FRACTION = 0.2  # c = 1/5 of the batch's largest absolute error (Laina et al. 2016)
# facebookresearch/dinov2 @ b8931f7 (file last changed d5c376b),
# dinov2/eval/depth/models/losses/{sigloss,gradientloss}.py:
SIGLOSS_EPS = 1e-3  # "avoid grad explode": log(d + eps) - log(d* + eps)
SIGLOSS_WARM_ITER = 100  # SigLoss(warm_up=True) default warm_iter: calls, not epochs
GRADIENT_LOSS_WEIGHT = 0.5  # dinov2_vitb14 NYU linear config (third-party copy): 0.5 x GradientLoss
GRADIENT_STRIDES = (1, 2, 4, 6)  # [input] + [input[::2i, ::2i] for i in 1..3]


def berhu(prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Reverse Huber loss, mean over the batch's valid pixels.

    B(x) = |x| where |x| <= c, else (x^2 + c^2) / (2c), with x = prediction - target and
    c = 1/5 max |x| over the batch's valid pixels (Laina et al. 2016, cited by BYOL v3 App. D.6
    with Owen 2007). c is a threshold, not a function to differentiate: it is detached. Both
    branches meet at |x| = c with value c and slope sign(x). When every error is 0, c = 0 and the
    loss is 0. A batch without a valid pixel gives 0 (and zero gradients).
    """
    # DEVIATION(depth-masking): invalid (unmeasured) pixels are left out; BYOL and Laina do not
    # say (the labelled set's filled depth has none, the raw frames have many).
    error = (prediction - target)[valid]
    if error.numel() == 0:
        return prediction.sum() * 0.0
    absolute = error.abs()
    c = BERHU_FRACTION * absolute.max().detach()
    safe_c = torch.where(c > 0, c, torch.ones_like(c))  # c = 0: every |x| <= c takes |x|
    quadratic = (error.square() + safe_c.square()) / (2 * safe_c)
    return torch.where(absolute <= c, absolute, quadratic).mean()


def sigloss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    variance_focus: float = 0.85,
    warm_up: bool = False,
) -> torch.Tensor:
    """DINOv2's SigLoss (after AdaBins): sqrt(Var(g) + (1 - variance_focus) mean(g)^2).

    g = log(d + 1e-3) - log(d* + 1e-3) over the valid pixels of the whole batch, pooled; Var is
    torch.var's unbiased (N - 1) variance; 1 - 0.85 = 0.15 is DINOv2's constant. During warm-up
    (SigLoss(warm_up=True): its first 100 calls, SIGLOSS_WARM_ITER; the engine passes
    warm_up=step < SIGLOSS_WARM_ITER) the loss is sqrt(0.15 mean(g)^2) = 0.39 |mean(g)|.
    Source: facebookresearch/dinov2 @ b8931f7, dinov2/eval/depth/models/losses/sigloss.py.
    As there, there is no guard for sqrt at 0 (a perfect prediction) or for a single pixel.
    """
    g = torch.log(prediction[valid] + SIGLOSS_EPS) - torch.log(target[valid] + SIGLOSS_EPS)
    mean_term = (1.0 - variance_focus) * g.mean().square()
    if warm_up:
        return torch.sqrt(mean_term)
    return torch.sqrt(torch.var(g) + mean_term)


def gradient_loss(
    prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """DINOv2's GradientLoss (after MegaDepth): multi-scale L1 of the log-error's differences.

    At each stride s in (1, 2, 4, 6) (maps subsampled [::s, ::s]), with D = (log(d + 1e-3) -
    log(d* + 1e-3)) x valid, the term is (sum |D[y, x] - D[y, x+2]| + sum |D[y, x] - D[y+2, x]|
    over pairs of valid pixels) / (valid pixels at that stride); the loss is the sum over strides.
    Note the pairs are 2 pixels apart and the strides 2i, as in the source. Here the spatial axes
    are always the last two; leading axes (batch, channel) are summed over. The source indexes the
    first two axes, so on DINOv2's [B, 1, H, W] batches it differences images b and b + 2 and the
    size-1 channel axis: with its 2 images per GPU both sums are empty and the term is 0.
    Source: facebookresearch/dinov2 @ b8931f7, dinov2/eval/depth/models/losses/gradientloss.py.
    """
    total = prediction.new_zeros(())
    for stride in GRADIENT_STRIDES:
        pick = (..., slice(None, None, stride), slice(None, None, stride))
        keep = valid[pick]
        count = keep.sum()
        if count == 0:
            continue
        mask = keep.to(prediction.dtype)
        log_error = torch.log(prediction[pick] + SIGLOSS_EPS) - torch.log(
            target[pick] + SIGLOSS_EPS
        )
        log_error = torch.where(keep, log_error, 0.0)  # the source's x mask, NaN-safe
        rows = (log_error[..., :-2, :] - log_error[..., 2:, :]).abs() * mask[..., :-2, :]
        rows = rows * mask[..., 2:, :]
        cols = (log_error[..., :, :-2] - log_error[..., :, 2:]).abs() * mask[..., :, :-2]
        cols = cols * mask[..., :, 2:]
        total = total + (rows.sum() + cols.sum()) / count
    return total
