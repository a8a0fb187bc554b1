"""Convolutions with a single output position (small images) computed as one matrix product.

At 16 px the standard ResNet stem leaves layer3 and layer4 with 1x1 feature maps: their 3x3
convolutions have one output position, and of their 9 taps only the centre one ever meets the
image (the others see only the zero padding). A convolution with one output position is exactly
one matrix product: the visible window of the input, flattened, times the kernel taps it meets.
`SinglePositionConv2d` computes that product, with the same parameters and state-dict keys, the
same output and the same gradients (the unseen taps get 0, as in the convolution). For ResNet-18
at 16 px that is 10 of its 20 convolutions and two thirds of its multiply-adds, nearly all of
them on padding: the BYOL step runs ~1.9x faster on CPU (README, "The demo preset").

It also avoids a torch 2.14 oneDNN bug: under bf16 autocast on CPU, a strided 3x3 convolution
on a 1x1 input (layer4.0.conv1 at 16 px) writes garbage, up to NaN, into the weight gradient of
the taps that only see padding, from batch 16 on (fp32 is exact). As a matrix product that
convolution is correct in bf16 (tests/pretrain/test_fast_path.py).
"""

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn


def visible_window(conv: nn.Conv2d, height: int, width: int) -> tuple[int, int, int, int] | None:
    """(rows, cols, top, left) when `conv` has one output position on a `height` x `width` input:
    the input's rows [0, rows) and columns [0, cols) meet the kernel's taps [top, top + rows) x
    [left, left + cols); None when the output is larger, or for convolutions this does not cover
    (dilated, grouped, non-zero or string padding)."""
    if conv.dilation != (1, 1) or conv.groups != 1 or conv.padding_mode != "zeros":
        return None
    if isinstance(conv.padding, str):
        return None
    window = []
    for size, kernel, stride, pad in zip(
        (height, width), conv.kernel_size, conv.stride, conv.padding
    ):
        if size + 2 * pad < kernel or (size + 2 * pad - kernel) // stride != 0:
            return None  # no output (the convolution itself raises) or more than one position
        window.append(min(size, kernel - pad))
    return window[0], window[1], conv.padding[0], conv.padding[1]


class SinglePositionConv2d(nn.Conv2d):
    """An nn.Conv2d that computes a single-position output as one matrix product (any other
    input goes through the convolution): same parameters, state-dict keys, output and gradients."""

    def _apply(self, fn, recurse: bool = True):
        """Keep the weight in the plain layout through `.to(memory_format=channels_last)`: the
        product reads it as a matrix, and a channels_last weight would cost a layout conversion of
        its whole gradient every step (a fifth of a 16 px step on CPU)."""
        super()._apply(fn, recurse)
        self.weight.data = self.weight.data.contiguous()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        window = visible_window(self, *images.shape[-2:])
        if window is None:
            return super().forward(images)
        rows, cols, top, left = window
        taps = self.weight[:, :, top : top + rows, left : left + cols]  # [C_out, C_in, rows, cols]
        visible = images[:, :, :rows, :cols].flatten(1)  # [B, C_in * rows * cols]
        return F.linear(visible, taps.flatten(1), self.bias)[:, :, None, None]  # [B, C_out, 1, 1]


def single_position_convs(encoder: nn.Module, image_size: int) -> list[str]:
    """Names of the plain nn.Conv2d of `encoder` with one output position at `image_size` (a
    shapes-only pass: an encoder on the "meta" device is enough)."""
    found: list[str] = []

    def check(name: str, conv: nn.Conv2d, args: tuple) -> None:
        if visible_window(conv, *args[0].shape[-2:]) is not None:
            found.append(name)

    hooks = [
        module.register_forward_pre_hook(partial(check, name))
        for name, module in encoder.named_modules()
        if type(module) is nn.Conv2d
    ]
    was_training = encoder.training
    try:
        with torch.no_grad():
            weight = next(encoder.parameters())
            shape = (1, 3, image_size, image_size)
            encoder.eval()(torch.zeros(shape, device=weight.device, dtype=weight.dtype))
    finally:
        encoder.train(was_training)
        for hook in hooks:
            hook.remove()
    return found


def use_single_position_convs(encoders: list[nn.Module], names: list[str]) -> None:
    """Swap the named convolutions of each encoder for `SinglePositionConv2d` (in place)."""
    for encoder in encoders:
        for name in names:
            encoder.get_submodule(name).__class__ = SinglePositionConv2d
