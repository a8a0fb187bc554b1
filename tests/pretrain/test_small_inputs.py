"""Single-position convolutions as matrix products (pretrain/small_inputs.py): the same output and
gradients as the convolution, in float64 to rounding; which ResNet-18 convolutions qualify at each
image size; a pretraining run uses them in both encoders; and under bf16 on CPU their weight
gradients are right where oneDNN's convolution writes garbage (the bug the module docstring names).
"""

import copy
import itertools
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from pretrain import dist
from pretrain.backbones import build_backbone
from pretrain.build import build_run
from pretrain.small_inputs import (
    SinglePositionConv2d,
    single_position_convs,
    use_single_position_convs,
    visible_window,
)
from pretrain.train import batch_to_device, train_step
from tests.pretrain.loss_curves import curve_config

GEOMETRIES = [  # (kernel, stride, padding, input size, bias)
    (k, s, p, n, bias)
    for k, s, n, bias in itertools.product((1, 3, 7), (1, 2, 4), (1, 2, 3, 4), (False, True))
    for p in sorted({0, k // 2})
    if n + 2 * p >= k
]


@pytest.mark.parametrize("kernel,stride,padding,size,bias", GEOMETRIES)
def test_a_single_position_is_the_convolution_with_its_gradients(
    kernel, stride, padding, size, bias
):
    generator = torch.Generator().manual_seed(kernel * 100 + stride * 10 + size)
    conv = torch.nn.Conv2d(5, 6, kernel, stride, padding, bias=bias).double()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator))
    images = torch.randn(3, 5, size, size + 1 if size < 4 else size, generator=generator)
    images = images.double().requires_grad_()

    expected = F.conv2d(images, conv.weight, conv.bias, stride, padding)  # the formula
    window = visible_window(conv, *images.shape[-2:])
    assert (window is not None) == (expected.shape[-2:] == (1, 1))

    fast = copy.deepcopy(conv)
    fast.__class__ = SinglePositionConv2d
    outputs = fast(images)
    assert outputs.shape == expected.shape
    torch.testing.assert_close(outputs, expected, rtol=0, atol=1e-12)
    output_grad = torch.randn(expected.shape, generator=generator).double()
    wanted = torch.autograd.grad(expected, [images, conv.weight], output_grad)
    got = torch.autograd.grad(outputs, [images, fast.weight], output_grad)
    for want, have in zip(wanted, got):
        torch.testing.assert_close(have, want, rtol=0, atol=1e-12)


def test_convolutions_it_does_not_cover_are_left_alone():
    dilated = torch.nn.Conv2d(4, 4, 3, padding=2, dilation=2)
    grouped = torch.nn.Conv2d(4, 4, 3, padding=1, groups=2)
    reflect = torch.nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")
    same = torch.nn.Conv2d(4, 4, 3, padding="same")
    for conv in (dilated, grouped, reflect, same):
        assert visible_window(conv, 1, 1) is None


@pytest.mark.parametrize(
    "image_size,stages",
    [(16, ("layer3", "layer4")), (20, ("layer4",)), (32, ("layer4",)), (64, ()), (224, ())],
)
def test_which_resnet18_convolutions_have_one_output_position(image_size, stages):
    """16 px: the stem and max-pool leave layer2 at 2x2, so every convolution of layer3 and
    layer4 has one output position; 20 and 32 px: layer4's; 64 px and up: none."""
    with torch.device("meta"):
        encoder, _ = build_backbone("resnet18")
    expected = [
        name
        for name, module in encoder.named_modules()
        if isinstance(module, torch.nn.Conv2d) and name.startswith(stages)
    ]
    assert single_position_convs(encoder, image_size) == expected


def test_a_resnet18_at_16_px_gives_the_same_features_and_gradients():
    torch.manual_seed(0)
    plain, _ = build_backbone("resnet18")
    plain = plain.double()
    fast = copy.deepcopy(plain)
    use_single_position_convs([fast], single_position_convs(fast, 16))
    assert isinstance(fast.layer4[0].conv1, SinglePositionConv2d)
    assert fast.state_dict().keys() == plain.state_dict().keys()
    images = torch.randn(8, 3, 16, 16).double()
    features_plain, features_fast = plain(images), fast(images)
    torch.testing.assert_close(features_fast, features_plain, rtol=0, atol=1e-10)
    features_plain.square().sum().backward()
    features_fast.square().sum().backward()
    for (name, p), q in zip(plain.named_parameters(), fast.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-9, atol=1e-10, msg=name)


def conv_inputs(encoder, image_size: int) -> dict[str, tuple[torch.nn.Conv2d, torch.Size]]:
    """Every convolution of `encoder` with the input shape it sees at `image_size`, batch 128 (the
    demo's; the oneDNN bug shows from batch 16 on, not at 8)."""
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


@pytest.mark.parametrize("image_size", [16, 20, 32])
def test_as_pretraining_runs_them_bf16_weight_gradients_match_fp32(image_size):
    """Each convolution of ResNet-18 as a pretraining run at `image_size` computes it (the
    single-position ones as matrix products): bf16 weight gradients within 2% of fp32."""
    encoder, _ = build_backbone("resnet18")
    use_single_position_convs([encoder], single_position_convs(encoder, image_size))
    for name, (conv, shape) in conv_inputs(encoder, image_size).items():
        exact, bf16 = weight_grad(conv, shape, False), weight_grad(conv, shape, True)
        error = float((bf16 - exact).norm() / exact.norm())
        assert torch.isfinite(bf16).all() and error < 0.02, (name, tuple(shape), error)


def test_a_16_px_bf16_run_computes_layer4_as_matrix_products_with_exact_padding_taps(tmp_path):
    """layer4.0.conv1 at 16 px (3x3, stride 2, 1x1 input) is the convolution oneDNN's bf16 kernel
    gets wrong (up to 1e30 and NaN); in a bf16 pretraining run the 8 taps that only see padding
    get 0 (.grad holds LARS's update after the step: its weight-decay part, a millionth of the
    centre tap's at most)."""
    config = curve_config(
        image_size=16, precision="bf16", augment_on="device", num_workers=0, compile="off"
    )  # batch 32: the bug shows from batch 16 on
    run = build_run(config, tmp_path / "run", torch.device("cpu"), dist.DistInfo())
    assert "layer4.0.conv1" in run.single_position_convs
    for encoder in (run.network.online_encoder, run.network.target_encoder):
        assert isinstance(encoder.layer4[0].conv1, SinglePositionConv2d)
    run.model.train()
    run.sampler.set_epoch(0)
    for _, batch in zip(range(3), run.loader):
        train_step(run, *batch_to_device(run, batch))
        run.step += 1
    grad = run.network.online_encoder.layer4[0].conv1.weight.grad
    padding_taps = grad.clone()
    padding_taps[:, :, 1, 1] = 0
    assert padding_taps.abs().max() < 1e-6 * grad[:, :, 1, 1].abs().max()
    assert all(torch.isfinite(p).all() for p in run.network.online_encoder.parameters())


def test_single_position_matmul_false_keeps_every_convolution(tmp_path):
    config = curve_config(image_size=16, single_position_matmul=False)
    run = build_run(config, tmp_path / "run", torch.device("cpu"), dist.DistInfo())
    assert run.single_position_convs == ()
    modules = [*run.network.online_encoder.modules(), *run.network.target_encoder.modules()]
    assert not any(isinstance(module, SinglePositionConv2d) for module in modules)


def test_their_weights_keep_the_plain_layout_under_channels_last(tmp_path):
    """A channels_last weight would cost a layout conversion of its whole gradient every step; the
    other convolutions do go channels_last."""
    run = build_run(
        curve_config(image_size=16), tmp_path / "run", torch.device("cpu"), dist.DistInfo()
    )
    assert run.config.channels_last
    for encoder in (run.network.online_encoder, run.network.target_encoder):
        assert encoder.layer4[0].conv1.weight.is_contiguous()
        stem = encoder.conv1.weight
        assert stem.is_contiguous(memory_format=torch.channels_last) and not stem.is_contiguous()
