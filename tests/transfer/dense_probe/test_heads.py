"""The probe heads: shapes, bilinear upsampling, DINOv2's linear depth bins, identical init."""

import torch
from torch import nn

from transfer.dense_probe.heads import (
    DepthBinProbes,
    SegmentationProbes,
    linear_normalised,
    upsample_to,
)


def test_segmentation_probes_are_bn_then_1x1_conv_with_one_init():
    probes = SegmentationProbes(3, channels=8, num_classes=5, seed=0)
    for head in probes.heads:
        bn, conv = head
        assert isinstance(bn, nn.BatchNorm2d) and bn.num_features == 8
        assert conv.kernel_size == (1, 1) and (conv.in_channels, conv.out_channels) == (8, 5)
        assert torch.equal(conv.weight, probes.heads[0][1].weight)
        assert conv.bias.abs().sum() == 0
    assert (
        0.005 < float(probes.heads[0][1].weight.detach().std()) < 0.015
    )  # mmseg's Normal(std 0.01)
    other = SegmentationProbes(1, channels=8, num_classes=5, seed=1)
    assert not torch.equal(other.heads[0][1].weight, probes.heads[0][1].weight)


def test_segmentation_logits_shape_and_upsampling_to_the_label_size():
    probes = SegmentationProbes(2, channels=8, num_classes=5).eval()
    logits = probes(torch.randn(3, 8, 2, 3))
    assert logits.shape == (2, 3, 5, 2, 3)  # [heads, B, K, h, w]: the feature resolution
    assert upsample_to(logits[0], (64, 96)).shape == (3, 5, 64, 96)
    assert upsample_to(logits, (64, 96)).shape == (2, 3, 5, 64, 96)
    # bilinear, align_corners=False, by hand: [0, 1] -> [0, 0.25, 0.75, 1]
    row = torch.tensor([0.0, 1.0]).reshape(1, 1, 1, 2)
    assert torch.allclose(upsample_to(row, (1, 4)).flatten(), torch.tensor([0, 0.25, 0.75, 1]))
    # a 1x1 conv commutes with the upsampling: the head is per pixel
    head = probes.heads[0]
    features = torch.randn(1, 8, 2, 3)
    assert torch.allclose(
        upsample_to(head(features), (8, 12)),
        head[1](upsample_to(head[0](features), (8, 12))),
        atol=1e-6,
    )


def test_linear_normalisation_sums_to_one():
    logits = torch.randn(2, 256, 3, 4) * 5
    probabilities = linear_normalised(logits)
    assert torch.allclose(probabilities.sum(1), torch.ones(2, 3, 4))
    assert (probabilities > 0).all()
    # (ReLU(l) + 0.1) / sum: a negative logit weighs 0.1, a logit of 0.9 weighs 1.0
    two = linear_normalised(torch.tensor([-3.0, 0.9]).reshape(1, 2, 1, 1)).flatten()
    assert torch.allclose(two, torch.tensor([0.1 / 1.1, 1.0 / 1.1]))


def test_a_dominant_bin_gives_its_centre_at_four_times_the_resolution():
    probes = DepthBinProbes(2, channels=4, bins=256, min_depth=0.001, max_depth=10.0)
    centres = torch.linspace(0.001, 10.0, 256)
    assert torch.allclose(probes.bin_centres, centres)
    with torch.no_grad():
        for head in probes.heads:
            head.weight.zero_()
            head.bias.fill_(-1.0)  # ReLU -> 0: every other bin weighs 0.1
            head.bias[100] = 1e7
    depth = probes(torch.randn(3, 4, 2, 5))
    assert depth.shape == (2, 3, 1, 8, 20)  # [heads, B, 1, 4h, 4w]
    assert torch.allclose(depth, torch.full_like(depth, float(centres[100])), atol=1e-4)


def test_uniform_bins_give_the_mean_depth():
    probes = DepthBinProbes(1, channels=4, bins=5, min_depth=1.0, max_depth=5.0)
    with torch.no_grad():
        probes.heads[0].weight.zero_()
        probes.heads[0].bias.zero_()
    depth = probes(torch.randn(1, 4, 1, 1))
    assert torch.allclose(depth, torch.full_like(depth, 3.0))  # mean of 1..5
