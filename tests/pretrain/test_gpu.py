"""GPU correctness (marker `gpu`, run with `make test-gpu` on a CUDA machine; `make test` leaves
them out): the fast path (bf16 autocast, torch.compile, photometric ops on the device) trains
like the plain one (fp32, eager, photometric ops in the loader) over the first 50 steps."""

import pytest
import torch
from torch.utils.data import default_collate

from pretrain.augment import byol_views
from pretrain.data import SyntheticDataset, dataset_stats
from pretrain.views import TwoCrops, TwoViews, finish_on_device
from tests.pretrain.loss_curves import assert_same_course, curve_config, loss_curve

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
STEPS = 50


def test_bf16_compiled_device_path_follows_the_fp32_eager_curve(tmp_path):
    plain = curve_config(precision="fp32", compile="off", augment_on="loader", num_workers=2)
    fast = curve_config(precision="bf16", compile="on", augment_on="device", num_workers=2)
    assert_same_course(
        loss_curve(plain, tmp_path / "plain", "cuda", STEPS),
        loss_curve(fast, tmp_path / "fast", "cuda", STEPS),
    )


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
