"""GPU correctness (marker `gpu`, run with `make test-gpu` on a CUDA machine; `make test` leaves
them out): the fast path (bf16 autocast, torch.compile, photometric ops on the device) trains
like the plain one (fp32, eager, photometric ops in the loader) over the first 50 steps."""

import dataclasses

import pytest
import torch
from torch.utils.data import default_collate

from pretrain import dist
from pretrain.augment import byol_views
from pretrain.config import tiny_cpu
from pretrain.data import SyntheticDataset, dataset_stats
from pretrain.train import batch_to_device, build_run, train_step
from pretrain.views import TwoCrops, TwoViews, finish_on_device

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
STEPS = 50


def loss_curve(config, run_dir) -> torch.Tensor:
    """The loss of each of the first STEPS steps of `config` on cuda (one host sync at the end)."""
    run = build_run(config, run_dir, torch.device("cuda"), dist.DistInfo())
    run.model.train()
    losses = []
    for epoch in range(config.epochs):
        run.sampler.set_epoch(epoch)
        for batch in run.loader:
            loss, _ = train_step(run, *batch_to_device(run, batch))
            run.step += 1
            losses.append(loss.float())
            if len(losses) == STEPS:
                return torch.stack(losses).cpu()
    raise AssertionError("the config has fewer than STEPS steps")


def test_bf16_compiled_device_path_follows_the_fp32_eager_curve(tmp_path):
    base = dataclasses.replace(
        tiny_cpu(),  # ResNet-18, 32 px synthetic data, small heads
        batch_size=32,
        epochs=4,  # 16 steps per epoch
        warmup_epochs=0.5,
        base_lr=1.0,
        num_workers=2,
    )
    plain = dataclasses.replace(base, precision="fp32", compile="off", augment_on="loader")
    fast = dataclasses.replace(base, precision="bf16", compile="on", augment_on="device")
    plain_curve = loss_curve(plain, tmp_path / "plain")
    fast_curve = loss_curve(fast, tmp_path / "fast")
    relative = (fast_curve - plain_curve).abs() / plain_curve.abs()
    print("fp32 eager :", [round(v, 4) for v in plain_curve.tolist()])
    print("bf16 fast  :", [round(v, 4) for v in fast_curve.tolist()])
    print(f"relative difference: median {relative.median():.4f}, max {relative.max():.4f}")
    assert torch.isfinite(fast_curve).all()
    assert relative[:10].max() < 0.02  # the same start, to bf16 rounding
    assert relative.median() < 0.03 and relative.max() < 0.10  # and the same course
    assert plain_curve[-10:].mean() < plain_curve[:10].mean()  # the curve is really learning


def test_device_views_on_cuda_equal_loader_views():
    dataset = SyntheticDataset(num_images=64, image_size=64, num_classes=4, seed=3)
    views = byol_views()
    mean, std = dataset_stats("imagenet")
    keys = [(0, index) for index in range(len(dataset))]
    loader_1, loader_2, _ = default_collate(
        [TwoViews(dataset, *views, 48, 5, mean, std)[key] for key in keys]
    )
    batch = default_collate([TwoCrops(dataset, *views, 48, 5)[key] for key in keys])
    cuda_1, cuda_2, _ = finish_on_device(batch, torch.device("cuda"), views, mean, std)
    torch.testing.assert_close(cuda_1.cpu(), loader_1, atol=2e-3, rtol=0)
    torch.testing.assert_close(cuda_2.cpu(), loader_2, atol=2e-3, rtol=0)
