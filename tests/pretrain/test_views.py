"""The two places views are finished (loader workers or the device) draw the same views, and a
run with the device path trains like one with the loader path (pretrain/views.py)."""

import dataclasses

import pytest
import torch
from torch.utils.data import default_collate

from pretrain.augment import byol_views
from pretrain.checkpoint import load_checkpoint
from pretrain.config import PretrainConfig
from pretrain.data import SyntheticDataset, dataset_stats
from pretrain.train import train
from pretrain.views import TwoCrops, TwoViews, build_pretrain_loader, finish_on_device

MEAN, STD = dataset_stats("imagenet")


@pytest.mark.parametrize("ops", ["authors", "torchvision"])
@pytest.mark.parametrize("small_images", [False, True])
def test_device_path_draws_the_views_of_the_loader_path(small_images, ops):
    # Full T / T' (blur, solarize) at 40 px and the small-image variant; 48 samples, 2 epochs;
    # both semantics of the ops (pretrain/augment.py).
    dataset = SyntheticDataset(num_images=24, image_size=56, num_classes=3, seed=1)
    views = byol_views(small_images=small_images, ops=ops)
    two_views = TwoViews(dataset, *views, 40, 7, MEAN, STD)
    two_crops = TwoCrops(dataset, *views, 40, 7)
    keys = [(epoch, index) for epoch in (0, 1) for index in range(len(dataset))]

    loader_1, loader_2, loader_labels = default_collate([two_views[key] for key in keys])
    batch = default_collate([two_crops[key] for key in keys])
    assert batch[0].dtype == torch.uint8  # what crosses to the device is uint8
    device_1, device_2, device_labels = finish_on_device(
        batch, torch.device("cpu"), views, MEAN, STD
    )

    assert torch.equal(loader_labels, device_labels)
    for loader_view, device_view in ((loader_1, device_1), (loader_2, device_2)):
        assert loader_view.shape == device_view.shape == (len(keys), 3, 40, 40)
        difference = (loader_view - device_view).abs().max().item()
        assert difference < 1e-4, f"views differ by {difference}"
    # and the views are really augmented: not two copies of one another
    assert (device_1 - device_2).abs().mean() > 0.05


def test_device_path_changes_only_where_the_ops_run(tiny_config, tmp_path):
    """Same run, photometric ops in the loader vs batched after the copy: same weights."""
    finals = {}
    for augment_on in ("loader", "device"):
        config = tiny_config(epochs=1, augment_on=augment_on, ckpt_every_min=10.0)
        train(config, tmp_path / augment_on, "cpu")
        finals[augment_on] = load_checkpoint(tmp_path / augment_on / "checkpoints" / "last.pt")
    assert finals["loader"]["step"] == finals["device"]["step"] == 5
    for name, tensor in finals["loader"]["model"].items():
        other = finals["device"]["model"][name]
        if tensor.is_floating_point():
            assert torch.allclose(tensor, other, rtol=1e-3, atol=1e-4), name
        else:
            assert torch.equal(tensor, other), name


def test_device_loader_pins_and_keeps_workers():
    dataset = SyntheticDataset(num_images=16, image_size=32, num_classes=2, seed=0)
    view_1, view_2 = byol_views(small_images=True)
    common = dict(view_1=view_1, view_2=view_2, out_size=16, batch_size=4, seed=0, rank=0)
    loader, sampler = build_pretrain_loader(
        dataset, **common, world_size=1, num_workers=1, mean=MEAN, std=STD, augment_on="device"
    )
    assert loader.persistent_workers and loader.prefetch_factor == 4
    sampler.set_epoch(0)
    crops_1, params_1, crops_2, params_2, labels = next(iter(loader))
    assert crops_1.dtype == crops_2.dtype == torch.uint8 and crops_1.shape == (4, 3, 16, 16)
    assert params_1["order"].shape == (4, 4) and params_2["blur_sigma"].shape == (4,)
    with pytest.raises(ValueError, match="augment_on must be one of"):
        build_pretrain_loader(
            dataset, **common, world_size=1, num_workers=0, mean=MEAN, std=STD, augment_on="gpu"
        )


@pytest.mark.parametrize(
    "field, value", [("augment_on", "gpu"), ("compile", "yes"), ("precision", "fp8")]
)
def test_config_refuses_unknown_words(field, value):
    with pytest.raises(ValueError, match=f"{field} must be one of"):
        dataclasses.replace(PretrainConfig(), **{field: value})
