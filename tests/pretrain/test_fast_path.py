"""The CPU fast path of small-image pretraining (the demo's: bf16 autocast on a CPU with native
bf16, views finished as batched ops on the main process, no loader workers) trains like the plain
path (fp32, views augmented one image at a time in two loader workers) over the first 50 steps,
the CPU twin of tests/pretrain/test_gpu.py."""

import dataclasses

from pretrain.config import tiny_cpu
from tests.pretrain.loss_curves import assert_same_course, loss_curve

STEPS = 50


def test_bf16_batched_views_on_cpu_follow_the_fp32_loader_curve(tmp_path):
    base = dataclasses.replace(
        tiny_cpu(),  # ResNet-18, 32 px synthetic data, small heads
        batch_size=32,
        epochs=4,  # 16 steps per epoch
        warmup_epochs=0.5,
        base_lr=1.0,
        compile="off",
    )
    plain = dataclasses.replace(base, precision="fp32", augment_on="loader", num_workers=2)
    fast = dataclasses.replace(base, precision="bf16", augment_on="device", num_workers=0)
    assert_same_course(
        loss_curve(plain, tmp_path / "plain", "cpu", STEPS),
        loss_curve(fast, tmp_path / "fast", "cpu", STEPS),
    )
