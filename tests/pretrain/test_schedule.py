"""Schedules against BYOL v3, App. B (linear scaling, warm-up, cosine) and DINO's utils.py."""

import dataclasses
import math

import numpy as np
import pytest

from pretrain.build import build_schedule
from pretrain.presets import tiny_vit_cpu
from pretrain.schedule import dino_cosine, scaled_lr, warmup_cosine


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


def dino_cosine_scheduler(base, final, epochs, niter_per_ep, warmup_epochs=0):
    """DINO's utils.cosine_scheduler, written out in NumPy as the authors define it."""
    warmup_iters = warmup_epochs * niter_per_ep
    warmup = np.linspace(0, base, warmup_iters) if warmup_epochs > 0 else np.array([])
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    decay = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))
    return np.concatenate((warmup, decay))


def test_dino_cosine_is_dinos_cosine_scheduler():
    expected = dino_cosine_scheduler(2e-3, 1e-6, epochs=12, niter_per_ep=7, warmup_epochs=3)
    for step, value in enumerate(expected):
        assert dino_cosine(step, 84, 2e-3, warmup_steps=21, final=1e-6) == pytest.approx(value)
    weight_decay = dino_cosine_scheduler(0.04, 0.4, epochs=5, niter_per_ep=3)
    for step, value in enumerate(weight_decay):
        assert dino_cosine(step, 15, 0.04, final=0.4) == pytest.approx(value)


def test_a_run_schedule_follows_its_method():
    dino = build_schedule(tiny_vit_cpu("dino"), steps_per_epoch=5)
    byol = build_schedule(tiny_vit_cpu("byol"), steps_per_epoch=5)
    assert dino.rule == "dino" and byol.rule == "byol"
    assert dino.lr(4) == pytest.approx(dino.peak_lr) and byol.lr(4) < byol.peak_lr  # warm-up ends
    assert dino.weight_decay(0) == pytest.approx(0.04)
    assert dino.weight_decay(10) == pytest.approx(0.4)
    assert byol.weight_decay(7) == 0.04  # constant without --weight-decay-end
    assert dino.freeze_last_layer_steps == 5 and byol.freeze_last_layer_steps == 0


def test_teacher_temperature_warms_up_per_epoch_as_dino():
    config = dataclasses.replace(
        tiny_vit_cpu("dino"),
        epochs=6,
        warmup_teacher_temp=0.04,
        teacher_temp=0.07,
        warmup_teacher_temp_epochs=3,
    )
    schedule = build_schedule(config, steps_per_epoch=4)
    # main_dino.py: np.concatenate((np.linspace(0.04, 0.07, 3), np.ones(6 - 3) * 0.07))[epoch]
    expected = np.concatenate((np.linspace(0.04, 0.07, 3), np.ones(3) * 0.07))
    for step in range(24):
        assert schedule.teacher_temp(step) == pytest.approx(expected[step // 4])
