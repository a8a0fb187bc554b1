"""The CPU fast path of small-image pretraining (the demo's: bf16 autocast on a CPU with native
bf16, views finished as batched ops on the main process, no loader workers) trains like the plain
path (fp32, views augmented one image at a time in two loader workers) over the first 50 steps,
the CPU twin of tests/pretrain/test_gpu.py; and the convolutions bf16 on CPU gets wrong (a oneDNN
bug) run in fp32."""

import copy
from functools import partial

import pytest
import torch

from pretrain import dist
from pretrain.backbones import build_backbone
from pretrain.build import bf16_cpu_hazards, build_run
from pretrain.train import batch_to_device, train_step
from tests.pretrain.loss_curves import assert_same_course, curve_config, loss_curve

STEPS = 50


def test_bf16_batched_views_on_cpu_follow_the_fp32_loader_curve(tmp_path):
    plain = curve_config(precision="fp32", augment_on="loader", num_workers=2, compile="off")
    fast = curve_config(precision="bf16", augment_on="device", num_workers=0, compile="off")
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


def padding_taps_share(grad: torch.Tensor) -> float:
    """Largest |gradient| of the 8 taps of a 3x3 kernel that see only padding (a 1x1 input),
    relative to the largest of the centre tap; 0 exactly, up to rounding, and NaN counts as 1."""
    outer = grad.clone()
    outer[:, :, 1, 1] = 0
    share = outer.abs().max() / grad[:, :, 1, 1].abs().max()
    return float(share) if torch.isfinite(share) else 1.0


def test_at_16_px_bf16_runs_the_hazard_in_fp32_and_its_gradient_is_exact(tmp_path):
    with torch.device("meta"):
        encoder, _ = build_backbone("resnet18")
    assert bf16_cpu_hazards(encoder, 16) == ["layer4.0.conv1"]  # 1x1 input, 3x3 stride 2
    conv, shape = conv_inputs(16)["layer4.0.conv1"]
    assert padding_taps_share(weight_grad(conv, shape, False)) < 1e-6  # fp32: zero, to rounding

    config = curve_config(
        image_size=16, precision="bf16", augment_on="device", num_workers=0, compile="off"
    )  # batch 32: the bug shows from batch 16 on
    run = build_run(config, tmp_path / "run", torch.device("cpu"), dist.DistInfo())
    assert run.fp32_convs == ("layer4.0.conv1",)
    assert run.byol.online_encoder.state_dict().keys() == encoder.state_dict().keys()
    run.model.train()
    run.sampler.set_epoch(0)
    for _, batch in zip(range(3), run.loader):
        train_step(run, *batch_to_device(run, batch))
        run.step += 1
    assert padding_taps_share(run.byol.online_encoder.layer4[0].conv1.weight.grad) < 1e-6
    assert all(torch.isfinite(p).all() for p in run.byol.online_encoder.parameters())
