"""berHu against its formula (value and gradient, both branches, the threshold), SigLoss and
GradientLoss against hand-computed cases and DINOv2's formula written out here."""

import math

import pytest
import torch

from transfer.depth.loss import berhu, gradient_loss, sigloss

EPS = 1e-3  # DINOv2's SigLoss / GradientLoss epsilon


def _prediction_with_errors(errors, target):
    return (target + torch.tensor(errors, dtype=torch.float64)).requires_grad_()


def test_berhu_value_and_gradient_follow_the_formula_on_both_branches():
    target = torch.tensor([2.0, 3.0, 4.0, 6.0, 1.0], dtype=torch.float64)
    errors = [0.5, -1.0, 2.0, -5.0, 0.25]  # c = 5 / 5 = 1: -1.0 sits exactly at c
    prediction = _prediction_with_errors(errors, target)
    loss = berhu(prediction, target, torch.ones(5, dtype=torch.bool))
    c = 1.0
    per_pixel = [abs(x) if abs(x) <= c else (x * x + c * c) / (2 * c) for x in errors]
    assert loss.item() == pytest.approx(sum(per_pixel) / 5)  # 0.5, 1, 2.5, 13, 0.25
    loss.backward()
    # d/dx: sign(x) on the L1 side (|x| <= c, including x = c), x / c beyond; c is not
    # differentiated (a differentiated c would add (c^2 - x^2) / (2 c^2) x 0.2 sign(x_max))
    slopes = [math.copysign(1.0, x) if abs(x) <= c else x / c for x in errors]
    expected = torch.tensor(slopes, dtype=torch.float64) / 5
    torch.testing.assert_close(prediction.grad, expected)


def test_berhu_masks_invalid_pixels_out_of_the_threshold_the_mean_and_the_gradient():
    target = torch.tensor([2.0, 3.0, 0.0, 4.0], dtype=torch.float64)
    prediction = _prediction_with_errors([0.5, -2.5, 100.0, 1.0], target)
    valid = target > 0
    loss = berhu(prediction, target, valid)
    c = 0.5  # 2.5 / 5, not 100 / 5
    expected = (0.5 + (2.5**2 + c * c) / (2 * c) + (1.0 + c * c) / (2 * c)) / 3
    assert loss.item() == pytest.approx(expected)
    loss.backward()
    assert prediction.grad[2] == 0.0


def test_berhu_threshold_is_the_batch_maximum():
    target = torch.full((2, 1, 1, 2), 5.0, dtype=torch.float64)
    errors = torch.tensor([[[[0.5, -0.5]]], [[[5.0, 0.0]]]], dtype=torch.float64)
    valid = torch.ones_like(target, dtype=torch.bool)
    batch = berhu(target + errors, target, valid)
    c = 1.0  # from the second image's 5.0: the first image's 0.5 errors are on the L1 side
    assert batch.item() == pytest.approx((0.5 + 0.5 + (25 + c * c) / (2 * c) + 0.0) / 4)
    alone = berhu(target[:1] + errors[:1], target[:1], valid[:1])  # its own c = 0.1
    assert alone.item() == pytest.approx((0.25 + 0.01) / 0.2)


def test_berhu_of_a_perfect_prediction_is_zero_with_finite_gradients():
    target = torch.rand(2, 3, 4, dtype=torch.float64) + 1
    prediction = target.clone().requires_grad_()
    loss = berhu(prediction, target, target > 0)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(prediction.grad).all()
    empty = berhu(prediction, target, torch.zeros_like(target, dtype=torch.bool))
    assert empty.item() == 0.0


def _from_log_errors(g, target):
    """Predictions d with log(d + eps) - log(d* + eps) = g exactly."""
    return (target + EPS) * torch.exp(g) - EPS


def test_sigloss_against_a_hand_computed_case_and_its_warm_up():
    target = torch.tensor([1.0, 2.0, 3.0, 0.0], dtype=torch.float64)
    g = torch.tensor([0.1, -0.2, 0.4, 9.0], dtype=torch.float64)  # the last pixel is invalid
    prediction = _from_log_errors(g, target)
    valid = target > 0
    # mean 0.1; unbiased variance (0 + 0.09 + 0.09) / 2 = 0.09; 0.15 mean^2 = 0.0015
    assert sigloss(prediction, target, valid).item() == pytest.approx(math.sqrt(0.0915))
    assert sigloss(prediction, target, valid, warm_up=True).item() == pytest.approx(
        math.sqrt(0.0015)
    )
    half = sigloss(prediction, target, valid, variance_focus=0.5).item()
    assert half == pytest.approx(math.sqrt(0.09 + 0.5 * 0.01))


def test_gradient_loss_against_a_hand_computed_3x3_case():
    target = torch.ones(3, 3, dtype=torch.float64)
    g = torch.tensor([[0.0, 0.1, 0.2], [0.3, 0.4, 0.5], [0.6, 0.7, 0.8]], dtype=torch.float64)
    prediction = _from_log_errors(g, target)
    valid = torch.ones(3, 3, dtype=torch.bool)
    # stride 1 only (a 3x3 map subsampled by 2, 4, 6 has no pixels 2 apart): rows 0 vs 2 differ
    # by 0.6 in 3 columns, columns 0 vs 2 by 0.2 in 3 rows: 2.4 over 9 valid pixels
    assert gradient_loss(prediction, target, valid).item() == pytest.approx(2.4 / 9)
    valid[0, 0] = False  # drops one 0.6 and one 0.2 pair and one pixel
    assert gradient_loss(prediction, target, valid).item() == pytest.approx(1.6 / 8)


def _dinov2_gradient_loss_2d(prediction, target):
    """gradientloss.py's formula on one [H, W] map, valid = target > 0, written out."""
    total = 0.0
    for step in (1, 2, 4, 6):
        d, t = prediction[::step, ::step], target[::step, ::step]
        mask = (t > 0).double()
        diff = (torch.log(d + EPS) - torch.log(t + EPS)) * mask
        vertical = (diff[:-2, :] - diff[2:, :]).abs() * mask[:-2, :] * mask[2:, :]
        horizontal = (diff[:, :-2] - diff[:, 2:]).abs() * mask[:, :-2] * mask[:, 2:]
        total += float((vertical.sum() + horizontal.sum()) / mask.sum())
    return total


def test_gradient_loss_matches_the_source_formula_on_one_map():
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(1, 1, 25, 31, generator=generator, dtype=torch.float64) * 5
    target[..., 3:9, 4:12] = 0.0  # unmeasured pixels
    prediction = torch.rand(1, 1, 25, 31, generator=generator, dtype=torch.float64) * 5 + 0.1
    ours = gradient_loss(prediction, target, target > 0).item()
    assert ours == pytest.approx(_dinov2_gradient_loss_2d(prediction[0, 0], target[0, 0]))
    assert ours > 0
