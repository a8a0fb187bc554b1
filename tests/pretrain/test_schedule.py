"""Learning-rate schedule against BYOL v3, App. B (linear scaling, warm-up, cosine)."""

import math

import pytest

from pretrain.schedule import scaled_lr, warmup_cosine


def lr_at(step, total, warmup, peak):
    return warmup_cosine(step, total, peak, warmup_steps=warmup)


def test_linear_scaling_rule():
    assert scaled_lr(0.2, 4096) == pytest.approx(3.2)
    assert scaled_lr(0.2, 256) == pytest.approx(0.2)


def test_warmup_then_cosine_to_zero():
    peak, total, warmup = 3.2, 1000, 100
    assert lr_at(0, total, warmup, peak) == 0.0
    assert lr_at(50, total, warmup, peak) == pytest.approx(peak * 0.5)
    assert lr_at(warmup, total, warmup, peak) == pytest.approx(peak)
    middle = warmup + (total - warmup) // 2
    assert lr_at(middle, total, warmup, peak) == pytest.approx(peak / 2)
    k = 700
    expected = peak * 0.5 * (1 + math.cos(math.pi * (k - warmup) / (total - warmup)))
    assert lr_at(k, total, warmup, peak) == pytest.approx(expected)
    assert lr_at(total, total, warmup, peak) == pytest.approx(0.0, abs=1e-12)
