"""Target decay schedule and EMA update against BYOL v3, Sec. 3.2."""

import copy
import math

import pytest
import torch
from torch import nn

from pretrain.ema import tau_at, update_target


@pytest.mark.parametrize("tau_base", [0.996, 0.99, 0.9995])
def test_tau_schedule_end_points_and_midpoint(tau_base):
    total = 1000
    assert tau_at(0, total, tau_base) == pytest.approx(tau_base)
    assert tau_at(total, total, tau_base) == pytest.approx(1.0)
    # cos(pi/2) = 0: tau = 1 - (1 - tau_base) / 2
    assert tau_at(total // 2, total, tau_base) == pytest.approx(1 - (1 - tau_base) / 2)
    k = 123
    formula = 1 - (1 - tau_base) * (math.cos(math.pi * k / total) + 1) / 2
    assert tau_at(k, total, tau_base) == pytest.approx(formula)


def test_tau_is_monotone():
    values = [tau_at(k, 100, 0.99) for k in range(101)]
    assert all(a <= b for a, b in zip(values, values[1:]))


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def test_update_target_equals_formula_and_copies_buffers():
    torch.manual_seed(0)
    online = _net()
    target = copy.deepcopy(online)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    online(torch.randn(16, 4))  # changes the online BN running statistics
    before = [p.clone() for p in target.parameters()]
    tau = 0.9
    update_target(online, target, tau)
    for old, new, theta in zip(before, target.parameters(), online.parameters()):
        assert torch.allclose(new, tau * old + (1 - tau) * theta, atol=1e-7)
    for target_buffer, online_buffer in zip(target.buffers(), online.buffers()):
        assert torch.equal(target_buffer, online_buffer)


def test_tau_one_freezes_target_and_tau_zero_copies_online():
    online, target = _net(), _net()
    frozen = [p.clone() for p in target.parameters()]
    update_target(online, target, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(frozen, target.parameters()))
    update_target(online, target, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(online.parameters(), target.parameters()))
