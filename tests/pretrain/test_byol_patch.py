"""byol-patch (ours): the neighbour-mean target against brute force, the loss against the formula
written out, and a tiny forward + backward.

The encoder is tests/pretrain/tiny_vit.py's two-block vit_tiny_test (pretrain/vit.py ViTEncoder).
"""

import pytest
import torch
import torch.nn.functional as F

from pretrain.byol_patch import BYOLPatch, neighbour_mean_targets
from pretrain.config import ConfigError
from tests.pretrain.test_selfpatch import brute_force_neighbours
from tests.pretrain.tiny_vit import TinyViT


@pytest.mark.parametrize("wrap", [True, False])
def test_neighbour_mean_targets_match_brute_force(wrap):
    torch.manual_seed(0)
    height, width, k = 3, 4, 4
    tokens, projections = torch.randn(2, 12, 6), torch.randn(2, 12, 5)
    got = neighbour_mean_targets(tokens, projections, (height, width), topk=k, wrap=wrap)
    for b in range(2):
        for i, cells in enumerate(brute_force_neighbours(height, width, wrap)):
            similarity = {j: F.cosine_similarity(tokens[b, i], tokens[b, j], dim=0) for j in cells}
            best = sorted(cells, key=lambda j: -similarity[j])[:k]  # fewer at borders, no wrap
            expected = torch.stack([projections[b, j] for j in best]).mean(dim=0)
            assert torch.allclose(got[b, i], expected, atol=1e-6)


def tiny_byol_patch(**kwargs):
    torch.manual_seed(1)
    options = dict(projector_hidden_dim=16, projection_dim=8, predictor_hidden_dim=16)
    return BYOLPatch(TinyViT(drop_path_rate=0.1), TinyViT(), **{**options, **kwargs})


def two_minus_two_cos(prediction, target):
    """BYOL's normalised MSE by hand, mean over rows."""
    p = prediction / prediction.norm(dim=-1, keepdim=True)
    z = target / target.norm(dim=-1, keepdim=True)
    return ((p - z) ** 2).sum(dim=-1).mean()


@pytest.mark.parametrize("wrap", [True, False])
def test_loss_is_byol_plus_weighted_patch_regression_to_the_neighbour_mean(wrap):
    model = tiny_byol_patch(patch_loss_weight=0.3, wrap=wrap).eval()  # eval: no drop-path,
    generator = torch.Generator().manual_seed(2)  # BN on running statistics, row by row
    view_1, view_2 = (torch.randn(3, 3, 12, 16, generator=generator) for _ in range(2))
    with torch.no_grad():
        loss, features = model(view_1, view_2)
        image, patch = 0.0, 0.0
        for online_view, target_view in ((view_1, view_2), (view_2, view_1)):
            pooled, patches = model.online_encoder.forward_tokens(online_view)
            prediction = model.predictor(model.online_projector(pooled))
            target_pooled, _ = model.target_encoder.forward_tokens(target_view)
            image += two_minus_two_cos(prediction, model.target_projector(target_pooled))
            # the patch term pairs online and target on the SAME view
            _, target_patches = model.target_encoder.forward_tokens(online_view)
            z = model.target_patch_projector(target_patches.flatten(0, 1)).view(3, 12, -1)
            q = model.patch_predictor(model.online_patch_projector(patches.flatten(0, 1)))
            targets = torch.empty_like(z)
            for b in range(3):
                for i, cells in enumerate(brute_force_neighbours(3, 4, wrap)):
                    cos = {
                        j: F.cosine_similarity(target_patches[b, i], target_patches[b, j], 0)
                        for j in cells
                    }
                    best = sorted(cells, key=lambda j: -cos[j])[:4]
                    targets[b, i] = z[b, best].mean(dim=0)
            patch += two_minus_two_cos(q, targets.flatten(0, 1))
        assert torch.allclose(loss, image + 0.3 * patch, atol=1e-5)
        assert torch.allclose(model.loss_terms["patch"], patch, atol=1e-5)
        assert torch.allclose(features, model.online_encoder.forward_tokens(view_1)[0])


def test_forward_backward_reaches_the_online_network_only():
    model = tiny_byol_patch()
    assert all(not p.requires_grad for p in model.target_modules().parameters())
    loss, features = model(torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16))
    assert torch.isfinite(loss)
    loss.backward()
    trained = [model.online_encoder, model.online_projector, model.predictor]
    trained += [model.online_patch_projector, model.patch_predictor]
    for module in trained:
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters())
    assert all(p.grad is None for p in model.target_modules().parameters())
    assert features.shape == (4, 32) and not features.requires_grad
    online = [p.shape for p in model.online_modules().parameters()]
    assert online == [p.shape for p in model.target_modules().parameters()]
    assert model.last_layer_parameters() == []


def test_bad_top_k_is_refused():
    with pytest.raises(ConfigError, match="top-k"):
        tiny_byol_patch(topk=0)
