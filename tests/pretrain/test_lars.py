"""LARS against its formula (BYOL v3, App. B; the authors' byol/utils/optimizers.py)."""

import torch
from torch import nn

from pretrain.byol import BYOL
from pretrain.lars import LARS, is_excluded, param_groups


def reference_lars_step(w, g, m, lr, wd, momentum, eta, adapt):
    """One LARS step written out for a single tensor."""
    u = g + wd * w
    if adapt:
        w_norm, u_norm = torch.linalg.norm(w), torch.linalg.norm(u)
        if w_norm > 0 and u_norm > 0:
            u = u * (eta * w_norm / u_norm)
    m = momentum * m + u
    return w - lr * m, m


def test_trust_ratio_formula_over_several_steps():
    torch.manual_seed(0)
    layer = nn.Linear(5, 7)
    named = list(layer.named_parameters())
    optimizer = LARS(param_groups(named, weight_decay=0.01), lr=0.5, momentum=0.9, eta=1e-3)
    w_ref = layer.weight.detach().clone()
    b_ref = layer.bias.detach().clone()
    m_w, m_b = torch.zeros_like(w_ref), torch.zeros_like(b_ref)
    for _ in range(3):
        grad_w, grad_b = torch.randn_like(w_ref), torch.randn_like(b_ref)
        layer.weight.grad, layer.bias.grad = grad_w.clone(), grad_b.clone()
        optimizer.step()
        w_ref, m_w = reference_lars_step(w_ref, grad_w, m_w, 0.5, 0.01, 0.9, 1e-3, adapt=True)
        b_ref, m_b = reference_lars_step(b_ref, grad_b, m_b, 0.5, 0.0, 0.9, 1e-3, adapt=False)
        assert torch.allclose(layer.weight, w_ref, atol=1e-6)
        assert torch.allclose(layer.bias, b_ref, atol=1e-6)


def test_excluded_parameters_get_no_decay_and_no_adaptation():
    """A bias with zero gradient must not move (no weight decay), and its step is lr x grad."""
    layer = nn.Linear(3, 2)
    optimizer = LARS(
        param_groups(layer.named_parameters(), weight_decay=10.0), lr=0.1, momentum=0.0
    )
    bias_before = layer.bias.detach().clone()
    layer.weight.grad = torch.zeros_like(layer.weight)
    layer.bias.grad = torch.zeros_like(layer.bias)
    optimizer.step()
    assert torch.equal(layer.bias, bias_before)  # no weight decay on the bias
    layer.bias.grad = torch.full_like(layer.bias, 2.0)
    optimizer.step()
    # No trust ratio: the plain SGD step lr x g.
    assert torch.allclose(layer.bias, bias_before - 0.1 * 2.0)


def test_zero_norm_weight_uses_ratio_one():
    w = nn.Parameter(torch.zeros(3, 3))
    optimizer = LARS(param_groups([("w", w)], weight_decay=0.0), lr=1.0, momentum=0.0)
    w.grad = torch.ones(3, 3)
    optimizer.step()
    assert torch.allclose(w, -torch.ones(3, 3))


def test_byol_groups_exclude_every_bias_and_bn_parameter():
    model = BYOL("resnet18", projector_hidden_dim=32, projection_dim=16, predictor_hidden_dim=32)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    adapted, excluded = param_groups(named, weight_decay=1.5e-6)
    bn_params = {
        id(p)
        for module in [*model.online_modules().modules(), *model.predictor.modules()]
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
        for p in module.parameters()
    }
    biases = {id(p) for n, p in named if n.endswith(".bias")}
    excluded_ids = {id(p) for p in excluded["params"]}
    assert bn_params <= excluded_ids and biases <= excluded_ids
    assert not ({id(p) for p in adapted["params"]} & (bn_params | biases))
    assert adapted["weight_decay"] == 1.5e-6 and excluded["weight_decay"] == 0.0
    assert adapted["lars_adaptation"] and not excluded["lars_adaptation"]
    assert all(p.ndim > 1 for p in adapted["params"])
    # Target parameters never reach the optimiser.
    assert not any(n.startswith("target_") for n, _ in named)
    assert is_excluded("x.bias", torch.zeros(3, 3))


def test_update_is_built_in_the_gradient_storage():
    """No parameter-sized tensor is allocated per step: u overwrites p.grad in place."""
    torch.manual_seed(0)
    layer = nn.Linear(5, 7)
    optimizer = LARS(param_groups(layer.named_parameters(), weight_decay=0.01), lr=0.5)
    grad_w = torch.randn_like(layer.weight)
    layer.weight.grad, layer.bias.grad = grad_w.clone(), torch.randn_like(layer.bias)
    pointer, weight = layer.weight.grad.data_ptr(), layer.weight.detach().clone()
    optimizer.step()
    assert layer.weight.grad.data_ptr() == pointer
    zeros = torch.zeros_like(weight)  # with m = 0, the new momentum is u
    _, expected_u = reference_lars_step(weight, grad_w, zeros, 0.5, 0.01, 0.9, 1e-3, adapt=True)
    assert torch.allclose(layer.weight.grad, expected_u, atol=1e-8)
