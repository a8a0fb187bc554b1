"""BYOL loss against 2 - 2 cos written independently, summed over both directions (eq. 2-4)."""

import math

import torch

from pretrain.loss import regression_loss, symmetric_loss


def reference_direction(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """||p/|p| - z/|z| ||^2 averaged over the batch, computed by hand."""
    total = 0.0
    for p, z in zip(prediction, target.detach()):
        p_unit = p / torch.sqrt((p * p).sum())
        z_unit = z / torch.sqrt((z * z).sum())
        total = total + ((p_unit - z_unit) ** 2).sum()
    return total / prediction.shape[0]


def test_direction_equals_two_minus_two_cos():
    torch.manual_seed(0)
    prediction, target = torch.randn(8, 16), torch.randn(8, 16)
    cosines = [float(p @ z / (p.norm() * z.norm())) for p, z in zip(prediction, target)]
    expected = sum(2 - 2 * c for c in cosines) / len(cosines)
    assert math.isclose(regression_loss(prediction, target).item(), expected, rel_tol=1e-5)
    assert torch.allclose(
        regression_loss(prediction, target), reference_direction(prediction, target)
    )


def test_identical_vectors_give_zero_and_opposite_give_four():
    v = torch.randn(4, 8)
    assert regression_loss(v, 3 * v).item() < 1e-6
    assert abs(regression_loss(v, -v).item() - 4.0) < 1e-5


def test_symmetric_loss_is_the_sum_of_both_directions_with_matching_gradients():
    torch.manual_seed(1)
    p1 = torch.randn(6, 10, requires_grad=True)
    p2 = torch.randn(6, 10, requires_grad=True)
    z1 = torch.randn(6, 10, requires_grad=True)
    z2 = torch.randn(6, 10, requires_grad=True)
    loss = symmetric_loss(p1, p2, z1, z2)
    loss.backward()
    grads = p1.grad.clone(), p2.grad.clone()

    q1 = p1.detach().clone().requires_grad_()
    q2 = p2.detach().clone().requires_grad_()
    expected = reference_direction(q1, z2.detach()) + reference_direction(q2, z1.detach())
    expected.backward()
    assert torch.allclose(loss, expected, atol=1e-6)
    # Summed, not averaged: each prediction's gradient is the full single-direction gradient.
    assert torch.allclose(grads[0], q1.grad, atol=1e-6)
    assert torch.allclose(grads[1], q2.grad, atol=1e-6)
    # Stop-gradient on the target projections.
    assert z1.grad is None and z2.grad is None


def test_averaging_would_halve_the_gradient():
    """Guards the summing rule: the loss equals twice the mean of the two directions."""
    p1, p2, z1, z2 = (torch.randn(4, 6) for _ in range(4))
    mean_of_directions = (regression_loss(p1, z2) + regression_loss(p2, z1)) / 2
    assert torch.allclose(symmetric_loss(p1, p2, z1, z2), 2 * mean_of_directions)
