"""SelfPatch: neighbour indices and top-k against brute force, class attention, the student path
that does not aggregate, the patch loss against the formula, and a tiny forward + backward.

The encoder is tests/pretrain/tiny_vit.py's two-block vit_tiny_test (pretrain/vit.py ViTEncoder).
"""

import math

import pytest
import torch

from pretrain.class_attention import ClassAttention, ClassAttentionBlock, PatchAggregation
from pretrain.config import ConfigError
from pretrain.dino import dino_loss
from pretrain.patch_neighbours import gather_neighbours, neighbour_index, top_neighbours
from pretrain.selfpatch import SelfPatch, patch_loss
from tests.pretrain.tiny_vit import TinyViT

GRIDS = [(4, 4), (14, 14), (6, 6), (3, 5), (7, 4), (2, 3), (1, 4), (1, 1)]


def brute_force_neighbours(height, width, wrap):
    """Per patch (row-major), the sorted distinct cells of its 3x3 window, itself excluded."""
    result = []
    for row in range(height):
        for col in range(width):
            cells = set()
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    r, c = row + dr, col + dc
                    if wrap:
                        r, c = r % height, c % width
                    elif not (0 <= r < height and 0 <= c < width):
                        continue
                    cells.add(r * width + c)
            cells.discard(row * width + col)
            result.append(sorted(cells))
    return result


@pytest.mark.parametrize("wrap", [True, False])
@pytest.mark.parametrize("height,width", GRIDS)
def test_neighbour_index_matches_brute_force(height, width, wrap):
    index, valid = neighbour_index(height, width, wrap=wrap)
    assert index.shape == valid.shape == (height * width, 8)
    for patch, expected in enumerate(brute_force_neighbours(height, width, wrap)):
        assert index[patch][valid[patch]].tolist() == expected
        assert valid[patch].tolist() == [True] * len(expected) + [False] * (8 - len(expected))
        assert (index[patch][~valid[patch]] == patch).all()  # placeholders: the patch itself


def test_wrap_around_reaches_the_opposite_edge_as_the_authors_index():
    index, valid = neighbour_index(14, 14, wrap=True)
    assert valid.all()  # every patch of a 14x14 (or 6x6) grid has 8 candidates
    assert index[0].tolist() == [1, 13, 14, 15, 27, 182, 183, 195]
    index, valid = neighbour_index(14, 14, wrap=False)
    assert index[0][valid[0]].tolist() == [1, 14, 15]  # a corner: 3 candidates
    assert valid[1].sum() == 5 and valid[15].sum() == 8


def cosine(a, b):
    return float((a * b).sum() / (a.norm() * b.norm()))


@pytest.mark.parametrize("wrap", [True, False])
@pytest.mark.parametrize("height,width,k", [(4, 5, 4), (4, 4, 2), (3, 3, 8), (2, 3, 4)])
def test_top_neighbours_match_brute_force(height, width, k, wrap):
    torch.manual_seed(height * 10 + width + k)
    tokens = torch.randn(2, height * width, 6)
    index, valid = neighbour_index(height, width, wrap=wrap)
    chosen, chosen_valid = top_neighbours(tokens, index, valid, k)
    assert chosen.shape == chosen_valid.shape == (2, height * width, k)
    candidates = brute_force_neighbours(height, width, wrap)
    for b in range(2):
        for patch, cells in enumerate(candidates):
            ranked = sorted(cells, key=lambda j: -cosine(tokens[b, patch], tokens[b, j]))
            got = chosen[b, patch][chosen_valid[b, patch]].tolist()
            assert got == ranked[:k]  # best first; fewer than k when there are fewer candidates


def test_top_k_out_of_range_is_refused():
    index, valid = neighbour_index(4, 4)
    with pytest.raises(ValueError, match="between 1 and 8"):
        top_neighbours(torch.randn(1, 16, 3), index, valid, 9)


def test_gather_neighbours_picks_the_chosen_tokens():
    tokens = torch.randn(2, 6, 3)
    chosen = torch.randint(0, 6, (2, 6, 4))
    gathered = gather_neighbours(tokens, chosen)
    for b in range(2):
        for i in range(6):
            for slot in range(4):
                assert torch.equal(gathered[b, i, slot], tokens[b, chosen[b, i, slot]])


def test_class_attention_attends_from_the_query_token_only():
    torch.manual_seed(1)
    attention = ClassAttention(8, num_heads=2)
    x = torch.randn(3, 5, 8)  # query token + 4 inputs
    out = attention(x)
    assert out.shape == (3, 1, 8)
    q = attention.q(x[:, :1]).view(3, 1, 2, 4).transpose(1, 2)  # [M, H, 1, 4]
    k = attention.k(x).view(3, 5, 2, 4).transpose(1, 2)
    v = attention.v(x).view(3, 5, 2, 4).transpose(1, 2)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(4), dim=-1)
    expected = attention.proj((weights @ v).transpose(1, 2).reshape(3, 1, 8))
    assert torch.allclose(out, expected, atol=1e-6)


def test_masked_keys_have_no_effect():
    torch.manual_seed(2)
    block = ClassAttentionBlock(8, num_heads=2)
    query, inputs = torch.randn(2, 1, 8), torch.randn(2, 4, 8)
    key_valid = torch.tensor([[True, True, False, False], [True, False, True, False]])
    out = block(query, inputs, key_valid)
    changed = inputs.clone()
    changed[~key_valid] = torch.randn(int((~key_valid).sum()), 8)
    assert torch.allclose(block(query, changed, key_valid), out, atol=1e-6)
    assert not torch.allclose(block(query, changed), out, atol=1e-3)
    only_valid = block(query[:1], inputs[:1, :2])  # the same as leaving them out
    assert torch.allclose(only_valid, out[:1], atol=1e-6)


def test_aggregation_module_shapes_and_parts():
    aggregation = PatchAggregation(8, num_heads=2)
    assert len(aggregation.blocks) == 2 and aggregation.query_token.shape == (1, 1, 8)
    assert aggregation.norm.eps == 1e-6 and aggregation.blocks[0].norm1.eps == 1e-6
    assert aggregation.blocks[0].mlp.fc1.out_features == 32  # MLP ratio 4
    assert aggregation.blocks[0].attn.q.bias is not None  # qkv_bias
    assert not any("gamma" in name for name, _ in aggregation.named_parameters())  # no LayerScale
    patches = torch.randn(3, 6, 8)
    token, outputs = aggregation.student(patches)
    assert token.shape == (3, 8) and outputs.shape == (3, 6, 8)
    neighbours, valid = torch.randn(3, 6, 4, 8), torch.ones(3, 6, 4, dtype=torch.bool)
    teacher_token, targets = aggregation.teacher(patches, neighbours, valid)
    assert teacher_token.shape == (3, 8) and targets.shape == (3, 6, 8)
    assert torch.allclose(teacher_token, token)  # the same image token on both paths
    expected = aggregation.norm(aggregation.aggregate(neighbours[:, 2], valid[:, 2]))
    assert torch.allclose(targets[:, 2], expected, atol=1e-6)  # patch 2: its neighbours only


def test_student_path_does_not_aggregate_patches():
    torch.manual_seed(3)
    aggregation = PatchAggregation(8, num_heads=2)
    patches = torch.randn(2, 5, 8)
    token, outputs = aggregation.student(patches)
    assert torch.equal(outputs, aggregation.norm(patches))  # LN of the raw tokens, nothing else
    changed = patches.clone()
    changed[:, 3] = torch.randn(2, 8)
    token_changed, outputs_changed = aggregation.student(changed)
    keep = [0, 1, 2, 4]
    assert torch.equal(outputs_changed[:, keep], outputs[:, keep])
    assert not torch.allclose(token_changed, token)  # the image token does see all patches


def reference_patch_loss(students, teachers, center, crops_per_run, student_temp, teacher_temp):
    """Per crop: mean over (sample, patch) of the cross-entropy; then mean over crops."""
    per_crop = []
    for student, teacher, crops in zip(students, teachers, crops_per_run):
        batch = len(student) // crops
        for crop in range(crops):
            terms = []
            for row in range(crop * batch, (crop + 1) * batch):
                for i in range(len(student[row])):
                    t = [(x - c) / teacher_temp for x, c in zip(teacher[row][i], center[0])]
                    p = [math.exp(x) / sum(math.exp(y) for y in t) for x in t]
                    s = [x / student_temp for x in student[row][i]]
                    log_norm = math.log(sum(math.exp(x) for x in s))
                    terms.append(sum(-pk * (sk - log_norm) for pk, sk in zip(p, s)))
            per_crop.append(sum(terms) / len(terms))
    return sum(per_crop) / len(per_crop)


def test_patch_loss_matches_the_formula():
    torch.manual_seed(4)
    classes, batch = 5, 2
    shapes = [(2 * batch, 4), (3 * batch, 2)]  # 2 crops of 4 patches, 3 crops of 2 patches
    students = [torch.randn(rows, n, classes).double() for rows, n in shapes]
    teachers = [torch.randn(rows, n, classes).double() for rows, n in shapes]
    center = torch.randn(1, classes).double()
    got = patch_loss(
        students,
        teachers,
        center,
        crops_per_run=[2, 3],
        student_temp=0.1,
        teacher_temp=0.04,
    )
    expected = reference_patch_loss(
        [s.tolist() for s in students],
        [t.tolist() for t in teachers],
        center.tolist(),
        [2, 3],
        0.1,
        0.04,
    )
    assert math.isclose(got.item(), expected, rel_tol=1e-6)


class CountingViT(TinyViT):
    def __init__(self, **kwargs):
        super().__init__(cls_token=False, final_norm=False, **kwargs)
        self.passes = []

    def forward_tokens(self, images):
        self.passes.append(tuple(images.shape))
        return super().forward_tokens(images)


def tiny_selfpatch(**kwargs):
    torch.manual_seed(5)
    options = dict(
        out_dim=20,
        hidden_dim=16,
        bottleneck_dim=8,
        norm_last_layer=True,
        student_temp=0.1,
        center_momentum=0.9,
        patch_out_dim=12,
        patch_loss_weight=0.1,
        topk=4,
        wrap=True,
    )
    return SelfPatch(CountingViT(drop_path_rate=0.1), CountingViT(), **{**options, **kwargs})


def multicrop(batch=2):
    generator = torch.Generator().manual_seed(6)
    sizes = [(16, 16)] * 2 + [(8, 12)] * 3  # local crops: a non-square 2x3 grid
    return [torch.randn(batch, 3, h, w, generator=generator) for h, w in sizes]


@pytest.mark.parametrize("wrap", [True, False])
def test_selfpatch_forward_backward_reaches_the_student_only(wrap):
    model = tiny_selfpatch(wrap=wrap)
    assert all(not p.requires_grad for p in model.target_modules().parameters())
    loss, features = model(multicrop(), teacher_temp=0.04)
    assert torch.isfinite(loss)
    loss.backward()
    assert model.target_encoder.passes == [(4, 3, 16, 16), (6, 3, 8, 12)]  # teacher: all crops
    trainable = [p for p in model.online_modules().parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)
    assert model.online_aggregation.query_token.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.target_modules().parameters())
    assert features.shape == (2, 32) and not features.requires_grad
    online = [p.shape for p in model.online_modules().parameters()]
    assert online == [p.shape for p in model.target_modules().parameters()]


def test_selfpatch_loss_is_image_plus_weighted_patch_over_the_right_views():
    model = tiny_selfpatch(patch_loss_weight=0.3).eval()  # eval: no drop-path, no centre update
    with torch.no_grad():
        model.center.normal_()
        model.patch_center.normal_()
        crops = multicrop()
        loss, _ = model(crops, teacher_temp=0.05)
        _, student_image, student_patch = zip(*model.student_outputs(crops))
        teacher_image, teacher_patch = zip(*model.teacher_outputs(crops))
    kwargs = dict(student_temp=0.1, teacher_temp=0.05)
    image = dino_loss(
        torch.cat(student_image), teacher_image[0], model.center, num_crops=5, **kwargs
    )  # teacher_image[0]: the run of the 2 global crops
    patch = patch_loss(
        student_patch, teacher_patch, model.patch_center, crops_per_run=[2, 3], **kwargs
    )
    assert torch.allclose(loss, image + 0.3 * patch)
    assert torch.allclose(model.loss_terms["patch"], patch)


def test_selfpatch_centres_see_every_crop_of_the_teacher():
    model = tiny_selfpatch()
    crops = multicrop()
    model(crops, teacher_temp=0.04)
    teacher_image, teacher_patch = zip(*model.teacher_outputs(crops))
    image_mean = torch.cat(teacher_image).mean(dim=0, keepdim=True)  # all 5 crops (authors')
    patch_mean = torch.cat([t.flatten(0, 1) for t in teacher_patch]).mean(dim=0, keepdim=True)
    assert torch.allclose(model.center, 0.1 * image_mean, atol=1e-6)
    assert torch.allclose(model.patch_center, 0.1 * patch_mean, atol=1e-6)
    globals_only = 0.1 * teacher_image[0].mean(dim=0, keepdim=True)
    assert not torch.allclose(model.center, globals_only, atol=1e-4)


def test_last_layers_and_bad_top_k():
    model = tiny_selfpatch()
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in model.last_layer_parameters()) == [
        "online_head.last_layer.weight_g",
        "online_head.last_layer.weight_v",
        "online_patch_head.last_layer.weight_g",
        "online_patch_head.last_layer.weight_v",
    ]
    with pytest.raises(ConfigError, match="top-k"):
        tiny_selfpatch(topk=9)
