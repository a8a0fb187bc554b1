"""The CPU fast path of small-image pretraining (bf16 autocast on a CPU with native bf16, views
finished as batched ops on the main process, no loader workers) trains like the plain path (fp32,
views augmented one image at a time in two loader workers) over the first 50 steps, the CPU twin
of tests/pretrain/test_gpu.py. Single-position convolutions: tests/pretrain/test_small_inputs.py.
"""

import json

import pytest
import torch

from pretrain import build
from pretrain.build import native_bf16, resolve_precision
from pretrain.train import train
from tests.pretrain.loss_curves import assert_same_course, curve_config, loss_curve

STEPS = 50


def test_bf16_batched_views_on_cpu_follow_the_fp32_loader_curve(tmp_path):
    plain = curve_config(precision="fp32", augment_on="loader", num_workers=2, compile="off")
    fast = curve_config(precision="bf16", augment_on="device", num_workers=0, compile="off")
    assert_same_course(
        loss_curve(plain, tmp_path / "plain", "cpu", STEPS),
        loss_curve(fast, tmp_path / "fast", "cpu", STEPS),
    )


@pytest.mark.parametrize("native", [True, False])
def test_precision_auto_is_bf16_only_where_the_device_computes_it_natively(native, monkeypatch):
    monkeypatch.setattr(build, "native_bf16", lambda device: native)
    cpu = torch.device("cpu")
    assert resolve_precision(curve_config(precision="auto"), cpu).precision == (
        "bf16" if native else "fp32"
    )
    for chosen in ("fp32", "bf16", "fp16"):  # a precision the user chose is kept
        assert resolve_precision(curve_config(precision=chosen), cpu).precision == chosen


def test_a_run_with_precision_auto_records_the_arithmetic_that_ran(tmp_path):
    """The identity file, the export's metadata and the record name bf16 or fp32, never auto."""
    expected = "bf16" if native_bf16(torch.device("cpu")) else "fp32"
    config = curve_config(precision="auto", max_steps=2, num_workers=0, records=str(tmp_path))
    export = train(config, tmp_path / "run", "cpu")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["precision"] == expected
    metadata = torch.load(export, map_location="cpu", weights_only=True)["metadata"]
    assert metadata["config"]["precision"] == expected
