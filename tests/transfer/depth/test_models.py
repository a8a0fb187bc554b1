"""The FCRN depth network: the up-convolution against a hand-written spec of the authors' TF code,
its relation to un-pooling + a 5x5 conv, the up-projection block, and the whole network's sizes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evaluate.features import load_encoder
from pretrain.backbones import build_backbone
from transfer.depth.models import (
    DepthNetwork,
    FastUpProjection,
    UnpoolAsConv,
    backbone_keys_loaded,
    build_depth_network,
    interleave_quadrants,
)

# (kernel name, rows it reads relative to i, columns relative to j), from network.py's tf.pad
# paddings: SAME 3x3; B pads top 1; C pads left 1; D pads top and left 1.
TAPS = {
    "a": ((-1, 0, 1), (-1, 0, 1)),
    "b": ((-1, 0), (-1, 0, 1)),
    "c": ((-1, 0, 1), (-1, 0)),
    "d": ((-1, 0), (-1, 0)),
}
PLACE = {"a": (0, 0), "b": (1, 0), "c": (0, 1), "d": (1, 1)}  # (row, column) offset in the 2x2 cell


def seeded_unpool(generator: torch.Generator) -> UnpoolAsConv:
    """A single-channel UnpoolAsConv with random (distinct) weights and biases."""
    module = UnpoolAsConv(1, 1)
    with torch.no_grad():
        for name in "abcd":
            conv = getattr(module, f"conv_{name}")
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator))
            conv.bias.copy_(torch.randn(1, generator=generator))
    return module


def expected_upconv(x: np.ndarray, module: UnpoolAsConv) -> np.ndarray:
    """The authors' unpool_as_conv written out element by element (one channel)."""
    height, width = x.shape

    def value(r: int, c: int) -> float:
        return float(x[r, c]) if 0 <= r < height and 0 <= c < width else 0.0  # zero padding

    out = np.zeros((2 * height, 2 * width))
    for name in "abcd":
        conv = getattr(module, f"conv_{name}")
        kernel, bias = conv.weight[0, 0].detach().numpy(), float(conv.bias[0].detach())
        rows, cols = TAPS[name]
        dr, dc = PLACE[name]
        for i in range(height):
            for j in range(width):
                total = bias
                for p, di in enumerate(rows):
                    for q, dj in enumerate(cols):
                        total += kernel[p, q] * value(i + di, j + dj)
                out[2 * i + dr, 2 * j + dc] = total
    return out


def test_unpool_as_conv_interleaves_the_four_convs_as_the_authors_code():
    generator = torch.Generator().manual_seed(0)
    module = seeded_unpool(generator)
    x = torch.randn(1, 1, 3, 4, generator=generator)
    y = module(x)
    assert y.shape == (1, 1, 6, 8)
    np.testing.assert_allclose(
        y[0, 0].detach().numpy(), expected_upconv(x[0, 0].numpy(), module), rtol=1e-5, atol=1e-5
    )


def test_interleave_puts_a_c_on_even_rows_and_b_d_on_odd_rows():
    a, b, c, d = (torch.full((1, 1, 2, 2), v) for v in (1.0, 2.0, 3.0, 4.0))
    y = interleave_quadrants(a, b, c, d)[0, 0]
    assert y.tolist() == [[1, 3, 1, 3], [2, 4, 2, 4], [1, 3, 1, 3], [2, 4, 2, 4]]


def test_unpool_as_conv_keeps_channels_apart_and_has_biases():
    module = UnpoolAsConv(5, 7)
    assert [tuple(getattr(module, f"conv_{n}").weight.shape[-2:]) for n in "abcd"] == [
        (3, 3),
        (2, 3),
        (3, 2),
        (2, 2),
    ]
    assert all(getattr(module, f"conv_{n}").bias is not None for n in "abcd")
    assert module(torch.randn(2, 5, 4, 6)).shape == (2, 7, 8, 12)


def unpool_top_left(x: torch.Tensor) -> torch.Tensor:
    """2x2 un-pooling: each value at the top-left of its 2x2 cell, zeros elsewhere."""
    unpooled = torch.zeros(*x.shape[:-2], 2 * x.shape[-2], 2 * x.shape[-1])
    unpooled[..., ::2, ::2] = x
    return unpooled


def unpool_from_5x5(kernel: torch.Tensor, bias: float) -> UnpoolAsConv:
    """Four sub-kernels of a 5x5 kernel: A = K[0::2, 0::2], B = K[1::2, 0::2], C, D alike."""
    module = UnpoolAsConv(1, 1)
    parts = {"a": (0, 0), "b": (1, 0), "c": (0, 1), "d": (1, 1)}
    with torch.no_grad():
        for name, (r, c) in parts.items():
            conv = getattr(module, f"conv_{name}")
            conv.weight.copy_(kernel[r::2, c::2].reshape(conv.weight.shape))
            conv.bias.fill_(bias)
    return module


def test_laina_5x5_equivalence_holds_only_with_bottom_right_padding():
    """Un-pool (top-left) + 5x5 conv, padding 2 == the four convs if B, C, D pad bottom/right.

    The authors' top/left padding gives a different map: exactly the 5x5 result with the odd
    rows read two rows earlier and the odd columns two columns earlier (Y[2i+1] = out[2i-1]).
    """
    generator = torch.Generator().manual_seed(1)
    kernel = torch.randn(5, 5, generator=generator)
    x = torch.randn(1, 1, 4, 5, generator=generator)
    module = unpool_from_5x5(kernel, bias=0.5)
    out = F.conv2d(unpool_top_left(x), kernel.view(1, 1, 5, 5), torch.tensor([0.5]), padding=2)

    with torch.no_grad():  # the same convs, padded bottom/right instead of top/left
        a = module.conv_a(x)
        b = module.conv_b(F.pad(x, (1, 1, 0, 1)))
        c = module.conv_c(F.pad(x, (0, 1, 1, 1)))
        d = module.conv_d(F.pad(x, (0, 1, 0, 1)))
        torch.testing.assert_close(interleave_quadrants(a, b, c, d), out)

        authors = module(x)[0, 0].numpy()
    assert not np.allclose(authors, out[0, 0].numpy(), atol=1e-3)
    wide = F.conv2d(unpool_top_left(x), kernel.view(1, 1, 5, 5), torch.tensor([0.5]), padding=4)
    wide = wide[0, 0].numpy()  # wide[r + 2, c + 2] = the 5x5 result at (r, c), r from -2
    expected = np.zeros_like(authors)
    for r in range(authors.shape[0]):
        for c in range(authors.shape[1]):
            source_r = r - 2 if r % 2 else r
            source_c = c - 2 if c % 2 else c
            expected[r, c] = wide[source_r + 2, source_c + 2]
    np.testing.assert_allclose(authors, expected, rtol=1e-5, atol=1e-5)


def test_fast_up_projection_is_relu_of_the_two_branches():
    torch.manual_seed(2)
    block = FastUpProjection(6, 4)
    for bn in (block.bn_1, block.bn_conv, block.bn_2):  # non-trivial BN affine and statistics
        torch.nn.init.normal_(bn.weight)
        torch.nn.init.normal_(bn.bias)
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        assert bn.eps == 1e-4
    block.eval()
    x = torch.randn(2, 6, 3, 5)
    y = block(x)
    assert y.shape == (2, 4, 6, 10)
    branch_1 = block.bn_conv(block.conv(torch.relu(block.bn_1(block.unpool_1(x)))))
    branch_2 = block.bn_2(block.unpool_2(x))
    torch.testing.assert_close(y, torch.relu(branch_1 + branch_2))
    assert (y >= 0).all() and (y == 0).any() and (y > 0).any()
    assert block.conv.kernel_size == (3, 3) and block.conv.bias is not None


@pytest.mark.parametrize(("arch", "conv5"), [("resnet18", 512), ("resnet50", 2048)])
def test_depth_network_maps_228x304_to_128x160(arch, conv5):
    torch.manual_seed(3)
    backbone, _ = build_backbone(arch)
    model = build_depth_network(backbone).eval()
    assert model.bridge[0].in_channels == conv5 and model.bridge[0].out_channels == 1024
    assert model.bridge[0].bias is not None
    widths = [block.conv.out_channels for block in model.decoder]
    assert widths == [512, 256, 128, 64]
    assert model.predictor.in_channels == 64 and model.predictor.kernel_size == (3, 3)
    with torch.no_grad():
        depth = model(torch.randn(1, 3, 228, 304))
    assert depth.shape == (1, 1, 128, 160)
    assert (depth >= 0).all()  # ConvPred keeps network.py's default relu=True


def test_depth_network_resnet50_has_laina_parameter_count():
    with torch.device("meta"):
        model = DepthNetwork(build_backbone("resnet50")[0])
    decoder = sum(p.numel() for p in model.parameters()) - sum(
        p.numel() for p in model.backbone.parameters()
    )
    # Written out from fcrn.py: bridge, then per block 2 x (25 taps + bias + BN) + 3x3 conv + BN
    expected = 2048 * 1024 + 1024 + 2 * 1024
    for c_in, c_out in ((1024, 512), (512, 256), (256, 128), (128, 64)):
        expected += 2 * (25 * c_in * c_out + 4 * c_out + 2 * c_out) + 9 * c_out * c_out + 3 * c_out
    expected += 9 * 64 + 1
    assert decoder == expected


def test_depth_network_small_input_trains_the_trunk_it_was_given():
    torch.manual_seed(4)
    encoder, _ = load_encoder("random:resnet18")
    state = {k: v.clone() for k, v in encoder.state_dict().items()}
    model = build_depth_network(encoder, dropout=0.5)
    backbone_keys = [k for k in model.state_dict() if k.startswith("backbone.")]
    assert len(backbone_keys) == len(state) and backbone_keys_loaded(model, state) == len(state)
    assert all(p.requires_grad for p in model.parameters())
    assert model.training and model.dropout.p == 0.5
    depth = model(torch.randn(2, 3, 64, 96))
    assert depth.shape == (2, 1, 32, 48)  # conv5 2x3, x16
    depth.mean().backward()
    assert model.backbone.conv1.weight.grad.abs().sum() > 0
    assert model.backbone.layer4[-1].conv2.weight.grad.abs().sum() > 0


def test_build_depth_network_refuses_a_non_resnet():
    with pytest.raises(ValueError, match="ResNet trunk"):
        build_depth_network(torch.nn.Linear(3, 3))
