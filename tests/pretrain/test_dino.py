"""DINO: the loss against the formula written out, the centre EMA (one and two ranks), the
weight-normed head's frozen g, the multi-crop grouping, and a tiny forward + backward.

The encoder is tests/pretrain/tiny_vit.py's two-block vit_tiny_test (pretrain/vit.py ViTEncoder).
"""

import math

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from pretrain.dino import (
    DINO,
    DINOHead,
    WeightNormedLinear,
    dino_loss,
    multicrop_tokens,
    update_center,
)
from tests.pretrain.tiny_vit import TinyViT


def reference_dino_loss(student, teacher, center, num_crops, student_temp, teacher_temp):
    """DINO's loss by hand: per sample, per class; pairs (global i, any v != i)."""
    batch = len(teacher) // 2
    student_views = [student[v * batch : (v + 1) * batch] for v in range(num_crops)]
    teacher_views = [teacher[:batch], teacher[batch:]]
    pair_losses = []
    for i in range(2):
        for v in range(num_crops):
            if v == i:
                continue  # same view: skipped
            per_sample = []
            for t_row, s_row in zip(teacher_views[i], student_views[v]):
                t_exp = [math.exp((t - c) / teacher_temp) for t, c in zip(t_row, center[0])]
                p = [e / sum(t_exp) for e in t_exp]
                s_scaled = [s / student_temp for s in s_row]
                log_norm = math.log(sum(math.exp(s) for s in s_scaled))
                per_sample.append(sum(-pk * (sk - log_norm) for pk, sk in zip(p, s_scaled)))
            pair_losses.append(sum(per_sample) / len(per_sample))
    return sum(pair_losses) / len(pair_losses), len(pair_losses)


def test_dino_loss_matches_the_formula_with_centring_and_temperatures():
    torch.manual_seed(0)
    num_crops, batch, classes = 5, 3, 7
    student = torch.randn(num_crops * batch, classes).double()
    teacher = torch.randn(2 * batch, classes).double()
    center = torch.randn(1, classes).double()
    expected, pairs = reference_dino_loss(
        student.tolist(), teacher.tolist(), center.tolist(), num_crops, 0.1, 0.04
    )
    assert pairs == 2 * (num_crops - 1)
    got = dino_loss(
        student, teacher, center, num_crops=num_crops, student_temp=0.1, teacher_temp=0.04
    )
    assert math.isclose(got.item(), expected, rel_tol=1e-6)
    # the formula's ingredients matter: another centre or temperature changes the loss
    for kwargs in ({"teacher_temp": 0.07}, {"student_temp": 0.2}):
        other = dino_loss(
            student,
            teacher,
            center,
            num_crops=num_crops,
            **{"student_temp": 0.1, "teacher_temp": 0.04, **kwargs},
        )
        assert not math.isclose(other.item(), expected, rel_tol=1e-3)
    uncentred = dino_loss(
        student, teacher, 0 * center, num_crops=num_crops, student_temp=0.1, teacher_temp=0.04
    )
    assert not math.isclose(uncentred.item(), expected, rel_tol=1e-3)


def test_dino_loss_skips_exactly_the_same_view_pairs():
    """The loss is the mean over the 2 x V matrix of pair cross-entropies without its diagonal
    (teacher crop i vs student crop i), not the mean over all pairs."""
    torch.manual_seed(1)
    num_crops, batch, classes = 4, 2, 5
    student = torch.randn(num_crops * batch, classes)
    teacher = torch.randn(2 * batch, classes)
    center = torch.zeros(1, classes)
    kwargs = {"num_crops": num_crops, "student_temp": 0.1, "teacher_temp": 0.1}
    base = dino_loss(student, teacher, center, **kwargs)
    diagonal = torch.empty(2, num_crops, dtype=torch.bool)
    cross = torch.empty(2, num_crops)
    log_student = torch.log_softmax(student / 0.1, -1).view(num_crops, batch, classes)
    probs = torch.softmax(teacher / 0.1, -1).view(2, batch, classes)
    for i in range(2):
        for v in range(num_crops):
            cross[i, v] = -(probs[i] * log_student[v]).sum(-1).mean()
            diagonal[i, v] = i == v
    assert torch.allclose(base, cross[~diagonal].mean())
    assert not torch.allclose(base, cross.mean())


def test_dino_loss_sends_no_gradient_to_the_teacher():
    student = torch.randn(6, 4, requires_grad=True)
    teacher = torch.randn(4, 4, requires_grad=True)
    loss = dino_loss(
        student, teacher, torch.zeros(1, 4), num_crops=3, student_temp=0.1, teacher_temp=0.04
    )
    loss.backward()
    assert student.grad is not None and teacher.grad is None


def test_center_is_an_ema_of_the_teacher_batch_mean():
    torch.manual_seed(2)
    center = torch.randn(1, 6)
    start = center.clone()
    teacher_1, teacher_2 = torch.randn(8, 6), torch.randn(8, 6)
    update_center(center, teacher_1, 0.9)
    expected = 0.9 * start + 0.1 * teacher_1.mean(dim=0, keepdim=True)
    assert torch.allclose(center, expected)
    update_center(center, teacher_2, 0.9)
    expected = 0.9 * expected + 0.1 * teacher_2.mean(dim=0, keepdim=True)
    assert torch.allclose(center, expected)


def _center_on_rank(rank, world_size, init_file, results):
    torch_dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        teacher = torch.full((3 + rank, 2), float(rank + 1))  # rank 0: 3 rows of 1, rank 1: 4 of 2
        center = torch.zeros(1, 2)
        update_center(center, teacher, 0.5)
        results.put((rank, center.tolist()))
    finally:
        torch_dist.destroy_process_group()


def test_center_batch_mean_is_taken_over_all_ranks(tmp_path):
    results = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_center_on_rank, args=(2, str(tmp_path / "init"), results), nprocs=2, join=True)
    outcomes = dict(results.get() for _ in range(2))
    mean = (3 * 1.0 + 4 * 2.0) / 7  # every row of every rank weighs the same
    for center in outcomes.values():
        assert center[0] == pytest.approx([0.5 * mean, 0.5 * mean])


def test_weight_normed_linear_equals_torch_weight_norm():
    torch.manual_seed(3)
    layer = WeightNormedLinear(5, 4)
    with torch.no_grad():
        layer.weight_g.uniform_(0.5, 2.0)
    reference = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(5, 4, bias=False))
    with torch.no_grad():
        reference.parametrizations.weight.original0.copy_(layer.weight_g)
        reference.parametrizations.weight.original1.copy_(layer.weight_v)
    x = torch.randn(3, 5)
    assert torch.allclose(layer(x), reference(x), atol=1e-6)
    assert dict(layer.named_parameters()).keys() == {"weight_g", "weight_v"}  # DINO's names


@pytest.mark.parametrize("norm_last_layer", [True, False])
def test_head_g_stays_one_when_frozen_and_v_trains(norm_last_layer):
    torch.manual_seed(4)
    head = DINOHead(8, 16, hidden_dim=12, bottleneck_dim=6, norm_last_layer=norm_last_layer)
    g_before = head.last_layer.weight_g.detach().clone()
    v_before = head.last_layer.weight_v.detach().clone()
    assert torch.equal(g_before, torch.ones(16, 1))
    trainable = [p for p in head.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=0.1, weight_decay=0.04)
    head(torch.randn(4, 8)).pow(2).sum().backward()
    optimizer.step()
    assert not torch.equal(head.last_layer.weight_v, v_before)
    g_trained = not torch.equal(head.last_layer.weight_g, g_before)
    assert g_trained is not norm_last_layer
    assert head.last_layer.weight_g.requires_grad is not norm_last_layer


def test_head_is_mlp_then_l2_normalised_then_weight_normed_layer():
    torch.manual_seed(5)
    head = DINOHead(384, 64, hidden_dim=2048, bottleneck_dim=256)
    kinds = [type(layer).__name__ for layer in head.mlp]
    assert kinds == ["Linear", "GELU", "Linear", "GELU", "Linear"]  # no BN
    shapes = [tuple(layer.weight.shape) for layer in head.mlp if hasattr(layer, "weight")]
    assert shapes == [(2048, 384), (2048, 2048), (256, 2048)]
    for layer in head.mlp[::2]:  # DINO's init: trunc-normal std .02, zero bias
        assert abs(layer.weight.std().item() - 0.02) < 0.002
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
    x = torch.randn(3, 384)
    bottleneck = head.mlp(x)
    unit = bottleneck / bottleneck.norm(dim=-1, keepdim=True)
    v = head.last_layer.weight_v
    expected = unit @ (v / v.norm(dim=1, keepdim=True)).T  # g = 1
    assert torch.allclose(head(x), expected, atol=1e-5)


class CountingViT(TinyViT):
    """Records the batch shape of every backbone pass."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.passes = []

    def forward_tokens(self, images):
        self.passes.append(tuple(images.shape))
        return super().forward_tokens(images)


def crops_for(batch=2, global_size=16, local_size=8, locals_=3):
    generator = torch.Generator().manual_seed(6)
    sizes = [global_size] * 2 + [local_size] * locals_
    return [torch.randn(batch, 3, size, size, generator=generator) for size in sizes]


def test_multicrop_groups_consecutive_same_size_crops_into_one_pass():
    encoder = CountingViT().eval()
    crops = crops_for()
    runs = multicrop_tokens(encoder, crops)
    assert encoder.passes == [(4, 3, 16, 16), (6, 3, 8, 8)]
    pooled = torch.cat([p for p, _ in runs])
    one_by_one = torch.cat([encoder.forward_tokens(crop)[0] for crop in crops])
    assert torch.allclose(pooled, one_by_one, atol=1e-5)
    assert [tuple(t.shape) for _, t in runs] == [(4, 16, 32), (6, 4, 32)]


def tiny_dino(**kwargs):
    torch.manual_seed(7)
    student, teacher = CountingViT(drop_path_rate=0.1), CountingViT()
    options = dict(
        out_dim=20,
        hidden_dim=16,
        bottleneck_dim=8,
        norm_last_layer=True,
        student_temp=0.1,
        center_momentum=0.9,
    )
    return DINO(student, teacher, **{**options, **kwargs})


def test_dino_forward_backward_reaches_the_student_only():
    model = tiny_dino()
    for online, target in zip(model.online_modules(), model.target_modules()):
        for p_online, p_target in zip(online.state_dict().values(), target.state_dict().values()):
            assert torch.equal(p_online, p_target)  # the teacher starts as the student
    assert all(not p.requires_grad for p in model.target_modules().parameters())
    crops = crops_for()
    loss, features = model(crops, teacher_temp=0.04)
    assert torch.isfinite(loss) and loss.ndim == 0
    loss.backward()
    assert model.target_encoder.passes == [(4, 3, 16, 16)]  # the teacher sees the globals only
    assert model.online_encoder.passes == [(4, 3, 16, 16), (6, 3, 8, 8)]
    trainable = [p for p in model.online_modules().parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)
    assert all(p.grad is None for p in model.target_modules().parameters())
    assert features.shape == (2, 32) and not features.requires_grad
    model.eval()  # no drop-path: the feature is the student's pooled feature of crops[0]
    with torch.no_grad():
        _, features = model(crops, teacher_temp=0.04)
        assert torch.allclose(features, model.online_encoder.forward_tokens(crops[0])[0])
    assert model.feature_dim == 32
    online_params = list(model.online_modules().parameters())
    target_params = list(model.target_modules().parameters())
    assert [p.shape for p in online_params] == [p.shape for p in target_params]  # EMA pairs


def test_dino_centre_moves_in_training_only_after_the_loss():
    model = tiny_dino()
    crops = crops_for()
    loss_train, _ = model(crops, teacher_temp=0.04)
    centre_after_one = model.center.clone()
    assert not torch.equal(centre_after_one, torch.zeros_like(centre_after_one))
    model.eval()
    with torch.no_grad():
        teacher_output = model.target_head(
            model.target_encoder.forward_tokens(torch.cat(crops[:2]))[0]
        )
    expected = 0.9 * torch.zeros_like(centre_after_one) + 0.1 * teacher_output.mean(0, True)
    assert torch.allclose(centre_after_one, expected, atol=1e-6)
    model(crops, teacher_temp=0.04)
    assert torch.equal(model.center, centre_after_one)  # eval: no update


def test_last_layer_parameters_are_the_heads_weight_normed_layer():
    model = tiny_dino(norm_last_layer=False)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in model.last_layer_parameters()) == [
        "online_head.last_layer.weight_g",
        "online_head.last_layer.weight_v",
    ]
