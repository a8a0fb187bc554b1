"""The CPU fast path of small-image pretraining (bf16 autocast on a CPU with native bf16, views
finished as batched ops on the main process, no loader workers) trains like the plain path (fp32,
views augmented one image at a time in two loader workers) over the first 50 steps, the CPU twin
of tests/pretrain/test_gpu.py. Single-position convolutions: tests/pretrain/test_small_inputs.py.
"""

from tests.pretrain.loss_curves import assert_same_course, curve_config, loss_curve

STEPS = 50


def test_bf16_batched_views_on_cpu_follow_the_fp32_loader_curve(tmp_path):
    plain = curve_config(precision="fp32", augment_on="loader", num_workers=2, compile="off")
    fast = curve_config(precision="bf16", augment_on="device", num_workers=0, compile="off")
    assert_same_course(
        loss_curve(plain, tmp_path / "plain", "cpu", STEPS),
        loss_curve(fast, tmp_path / "fast", "cpu", STEPS),
    )
