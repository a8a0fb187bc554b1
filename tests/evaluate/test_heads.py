"""The all-LRs-at-once sweep equals separate single-LR runs (BYOL v3, App. C.1 sweep)."""

import pytest
import torch

from evaluate.heads import LinearHeads, evaluate_heads, fit_heads, tensor_batches
from pretrain.sampling import SeededBatches

LRS = [0.4, 0.3, 0.2, 0.1, 0.05]


def blobs(num: int, dim: int = 24, classes: int = 6, seed: int = 0):
    """Gaussian class clusters: learnable, but not separable in a few steps."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=generator)
    labels = torch.arange(num) % classes
    features = centres[labels] + 1.5 * torch.randn(num, dim, generator=generator)
    return features, labels


def fit(lrs, features, labels, seed=0):
    batches, steps = tensor_batches(features, labels, batch_size=32, seed=seed, device="cpu")
    return fit_heads(
        batches,
        lrs=lrs,
        feature_dim=features.shape[1],
        num_classes=6,
        epochs=4,
        steps_per_epoch=steps,
        seed=seed,
    )


def test_sweep_equals_separate_single_lr_runs():
    train, heldout = blobs(200), blobs(120, seed=1)
    sweep = fit(LRS, *train)
    sweep_results = evaluate_heads(sweep, *heldout)
    for index, lr in enumerate(LRS):
        single = fit([lr], *train)
        for swept, alone in zip(sweep.heads[index].parameters(), single.parameters()):
            torch.testing.assert_close(swept, alone, rtol=1e-5, atol=1e-6)
        assert evaluate_heads(single, *heldout)[0] == pytest.approx(sweep_results[index])
    top1 = [result["top1"] for result in sweep_results]
    assert len(set(top1)) > 1  # the LRs really led to different heads


def test_heads_start_identical_and_seeded():
    heads = LinearHeads(3, feature_dim=100, num_classes=4, seed=7)
    weights = [head.weight for head in heads.heads]
    assert torch.equal(weights[0], weights[2]) and not heads.heads[1].bias.any()
    assert torch.equal(LinearHeads(1, 100, 4, seed=7).heads[0].weight, weights[0])
    assert weights[0].abs().max() <= 2 / 100**0.5  # truncated at 2 std, std 1/sqrt(D)
    assert heads(torch.ones(5, 100)).shape == (3, 5, 4)


def test_a_diverged_head_is_reported_not_scored():
    train = blobs(64)
    heads = fit([0.4, 0.1], *train)
    with torch.no_grad():
        heads.heads[0].weight[0, 0] = float("inf")  # as a too-large LR leaves it
    results = evaluate_heads(heads, *train)
    assert results[0] == {"top1": None, "top5": None} and results[1]["top1"] > 0


def test_image_and_feature_paths_share_the_sample_order():
    sampler = SeededBatches(10, 4, 3, last="keep")
    sampler.set_epoch(2)
    keys = [key for batch in sampler for key in batch]
    assert [len(batch) for batch in sampler] == [4, 4, 2]
    features = torch.arange(10.0).unsqueeze(1)
    batches, steps = tensor_batches(features, torch.arange(10), 4, seed=3, device="cpu")
    order = [int(x) for x, _ in batches(2) for x in x[:, 0]]
    assert steps == 3 and order == [index for epoch, index in keys] and {e for e, _ in keys} == {2}
