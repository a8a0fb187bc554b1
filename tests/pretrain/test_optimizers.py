"""Pretraining's optimisers against DINO's rules (main_dino.py, utils.py)."""

import torch
from torch import nn

from pretrain.optimizers import (
    adamw_param_groups,
    build_optimizer,
    clip_per_tensor,
    drop_last_layer_gradients,
    set_step_hyperparameters,
)


def small_network():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 3))


def test_adamw_groups_are_dinos_get_params_groups():
    network = small_network()
    token = nn.Parameter(torch.zeros(1, 1, 8))  # like [CLS] / SelfPatch's query: decayed
    frozen = nn.Parameter(torch.ones(3), requires_grad=False)  # like the frozen g: left out
    named = [*network.named_parameters(), ("query", token), ("g", frozen)]
    decayed, not_decayed = adamw_param_groups(named, weight_decay=0.04)
    # utils.get_params_groups: bias or ndim 1 -> not regularised; requires_grad False -> skipped
    assert [p.shape for p in decayed["params"]] == [(8, 4), (3, 8), (1, 1, 8)]
    assert [p.shape for p in not_decayed["params"]] == [(8,), (8,), (8,), (3,)]
    assert decayed["weight_decay"] == 0.04 and not_decayed["weight_decay"] == 0.0


def test_step_hyperparameters_decay_only_the_first_group():
    optimizer = build_optimizer("adamw", small_network().named_parameters(), weight_decay=0.04)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["betas"] == (0.9, 0.999) and optimizer.defaults["eps"] == 1e-8
    set_step_hyperparameters(optimizer, lr=1e-3, weight_decay=0.3)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 1e-3]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.3, 0.0]


def test_clip_per_tensor_is_dinos_clip_gradients():
    network = small_network()
    network(torch.randn(5, 4)).pow(2).sum().mul(50).backward()
    expected = []
    for parameter in network.parameters():  # utils.clip_gradients, written out
        grad = parameter.grad.clone()
        clip_coef = 0.5 / (grad.norm(2) + 1e-6)
        expected.append(grad * clip_coef if clip_coef < 1 else grad)
    assert any(e.norm() < p.grad.norm() for e, p in zip(expected, network.parameters()))
    clip_per_tensor(network.parameters(), 0.5)
    for parameter, wanted in zip(network.parameters(), expected):
        torch.testing.assert_close(parameter.grad, wanted)


def test_dropped_last_layer_gradients_leave_it_untouched_by_adamw():
    network = small_network()
    optimizer = build_optimizer("adamw", network.named_parameters(), weight_decay=0.5)
    set_step_hyperparameters(optimizer, lr=0.1, weight_decay=0.5)
    before = [p.detach().clone() for p in network.parameters()]
    network(torch.randn(5, 4)).sum().backward()
    drop_last_layer_gradients(network[2].parameters())
    optimizer.step()
    after = list(network.parameters())
    assert torch.equal(after[-2], before[-2]) and torch.equal(after[-1], before[-1])  # no decay
    assert not torch.equal(after[0], before[0])
