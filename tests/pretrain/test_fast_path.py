"""The CPU fast path of small-image pretraining (the demo's: bf16 autocast on a CPU with native
bf16, views finished as batched ops on the main process, no loader workers) trains like the plain
path (fp32, views augmented one image at a time in two loader workers) over the first 50 steps,
the CPU twin of tests/pretrain/test_gpu.py; and where bf16 on CPU is refused (a oneDNN bug)."""

import copy
import dataclasses
from functools import partial

import pytest
import torch

from pretrain.backbones import build_backbone
from pretrain.build import bf16_cpu_hazards
from pretrain.config import tiny_cpu
from tests.conftest import run_cli
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


def conv_inputs(image_size: int) -> dict[str, tuple[torch.nn.Conv2d, torch.Size]]:
    """Every convolution of ResNet-18 with the input shape it sees at `image_size`, batch 128 (the
    demo's; the oneDNN bug of bf16_cpu_hazards shows from batch 16 on, not at 8)."""
    encoder, _ = build_backbone("resnet18")
    shapes: dict[str, tuple[torch.nn.Conv2d, torch.Size]] = {}

    def record(name: str, conv: torch.nn.Conv2d, args: tuple) -> None:
        shapes[name] = (conv, args[0].shape)

    hooks = [
        module.register_forward_pre_hook(partial(record, name))
        for name, module in encoder.named_modules()
        if isinstance(module, torch.nn.Conv2d)
    ]
    with torch.no_grad():
        encoder(torch.zeros(128, 3, image_size, image_size))
    for hook in hooks:
        hook.remove()
    return shapes


def weight_grad(conv: torch.nn.Conv2d, shape: torch.Size, bf16: bool) -> torch.Tensor:
    """The weight gradient of `conv` alone (channels_last, as pretraining runs it) for a fixed
    random input of `shape` and a fixed random output gradient, under bf16 autocast or in fp32."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(shape, generator=generator).contiguous(memory_format=torch.channels_last)
    conv = copy.deepcopy(conv).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        outputs = conv(inputs)
    outputs.float().backward(torch.randn(outputs.shape, generator=generator))
    return conv.weight.grad.float()


@pytest.mark.parametrize("image_size", [20, 32])
def test_where_no_hazard_is_reported_bf16_weight_gradients_match_fp32(image_size):
    encoder, _ = build_backbone("resnet18")
    assert bf16_cpu_hazards(encoder, image_size) == []
    for name, (conv, shape) in conv_inputs(image_size).items():
        exact, bf16 = weight_grad(conv, shape, False), weight_grad(conv, shape, True)
        error = float((bf16 - exact).norm() / exact.norm())
        assert torch.isfinite(bf16).all() and error < 0.02, (name, tuple(shape), error)


def test_the_hazard_is_found_at_16_px_and_bf16_is_refused_there(tmp_path):
    encoder, _ = build_backbone("resnet18")
    assert bf16_cpu_hazards(encoder, 16) == ["layer4.0.conv1"]  # 1x1 input, 3x3 stride 2
    conv, shape = conv_inputs(16)["layer4.0.conv1"]
    exact = weight_grad(conv, shape, False)
    outer = exact.clone()
    outer[:, :, 1, 1] = 0
    assert outer.abs().max() == 0  # every tap but the centre sees padding only: zero gradient
    result = run_cli(
        "pretrain.launch",
        *("--preset", "tiny_cpu", "--image-size", "16", "--precision", "bf16"),
        *("--run-dir", str(tmp_path / "run"), "--max-steps", "1"),
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "layer4.0.conv1" in result.stderr and "--precision fp32" in result.stderr
