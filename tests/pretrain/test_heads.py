"""Projector / predictor MLP: BYOL v3, Sec. 3.3 / App. A."""

import copy

import pytest
import torch
from torch import nn

from pretrain.heads import mlp, per_view


def test_mlp_layer_structure_matches_the_paper() -> None:
    projector = mlp(2048, 4096, 256)
    assert [type(layer) for layer in projector] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    first, norm, relu, last = projector
    assert (first.in_features, first.out_features) == (2048, 4096)
    assert first.bias is not None
    assert norm.num_features == 4096
    assert norm.eps == 1e-5 and norm.momentum == 0.1  # decay 0.9
    assert norm.affine
    assert relu.inplace
    assert (last.in_features, last.out_features) == (4096, 256)
    assert last.bias is None  # authors' code: output linear without bias


def test_batch_norm_only_after_the_first_linear() -> None:
    predictor = mlp(256, 4096, 256)
    norms = [
        i for i, layer in enumerate(predictor) if isinstance(layer, nn.modules.batchnorm._BatchNorm)
    ]
    assert norms == [1]
    assert isinstance(predictor[-1], nn.Linear)  # no BN on the output


def test_mlp_output_shape_and_unnormalised_output() -> None:
    torch.manual_seed(0)
    predictor = mlp(16, 32, 8)
    outputs = predictor(torch.randn(4, 16))
    assert outputs.shape == (4, 8)
    # Without an output BN the batch mean of each output unit is not forced to zero.
    assert outputs.mean(dim=0).abs().max() > 1e-3


def test_mlp_parameter_count_of_byol_projector_and_predictor() -> None:
    def count(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    # Linear (with bias) + BN affine + Linear (without bias).
    assert count(mlp(2048, 4096, 256)) == 2048 * 4096 + 4096 + 2 * 4096 + 4096 * 256
    assert count(mlp(256, 4096, 256)) == 256 * 4096 + 4096 + 2 * 4096 + 4096 * 256


def test_per_view_equals_one_call_per_view() -> None:
    """Stacked linear layers, per-view BN: outputs, gradients and BN running stats unchanged."""
    torch.manual_seed(0)
    stacked = mlp(16, 64, 8)
    separate = copy.deepcopy(stacked)
    inputs = [torch.randn(6, 16) * (i + 1) for i in range(2)]  # views with different statistics
    out_stacked = per_view(stacked, *[x.clone().requires_grad_() for x in inputs])
    out_separate = [separate(x) for x in inputs]
    for a, b in zip(out_stacked, out_separate):
        torch.testing.assert_close(a, b)
    weights = torch.randn(2, 6, 8)
    sum((out * w).sum() for out, w in zip(out_stacked, weights)).backward()
    sum((out * w).sum() for out, w in zip(out_separate, weights)).backward()
    for (name, a), b in zip(stacked.named_parameters(), separate.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)
    for (name, a), b in zip(stacked.named_buffers(), separate.buffers()):
        torch.testing.assert_close(a, b, msg=name)  # running stats updated view by view, in order
    # pooling both views in one BN call would differ: the test can tell
    assert not torch.allclose(stacked(torch.cat(inputs))[:6], out_separate[0])


def test_per_view_refuses_views_of_different_batch_size() -> None:
    with pytest.raises(ValueError, match="equal batch size"):
        per_view(mlp(4, 8, 2), torch.randn(3, 4), torch.randn(5, 4))
