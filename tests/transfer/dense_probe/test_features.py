"""The dense feature cache: one backbone pass, hit the second time, missed for another view."""

import numpy as np
import pytest
import torch

from evaluate.features import load_encoder
from pretrain.data import DataError
from tests.transfer.segmentation.layouts import make_voc
from transfer.dense_probe.features import DenseView, cached_dense_features
from transfer.segmentation.data import build_segmentation_set
from transfer.segmentation.models import resnet_stages

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def counting(encoder) -> list[int]:
    """Count the encoder's passes (its stem runs once per batch)."""
    calls = [0]
    encoder.conv1.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_view_resizes_the_shorter_side_and_centre_crops_image_and_labels():
    image = torch.zeros(3, 60, 80, dtype=torch.uint8)
    label = torch.zeros(60, 80, dtype=torch.int64)
    label[:, 40:] = 7  # right half
    view = DenseView(30, MEAN, STD)
    pixels, target = view.apply(image, label)
    assert pixels.shape == (3, 30, 30) and target.shape == (30, 30)  # 30x40, centre 30 columns
    assert target.dtype == torch.int64
    assert set(target[:, :15].unique().tolist()) == {0}
    assert set(target[:, 15:].unique().tolist()) == {7}
    whole = DenseView(30, MEAN, STD, crop=False)
    assert whole.apply(image, label)[1].shape == (30, 40)
    assert view.view_id != whole.view_id != DenseView(32, MEAN, STD).view_id


def test_cache_is_hit_the_second_time_and_missed_for_another_view(tmp_path):
    voc = make_voc(tmp_path, train=3, val=1)
    images = build_segmentation_set("voc2012", str(voc), "train")
    encoder, metadata = load_encoder("random:resnet18")
    calls = counting(encoder)
    sha, cache = metadata["weights_sha256"], tmp_path / "cache"
    first = cached_dense_features(encoder, sha, images, DenseView(64, MEAN, STD), cache_dir=cache)
    assert calls[0] == 1  # one batch of 3
    assert first.features.dtype == np.float16 and first.features.shape == (3, 512, 2, 2)
    assert first.targets.dtype == np.uint8 and first.targets.shape == (3, 64, 64)
    assert set(np.unique(first.targets)) <= set(range(21)) | {255}
    views = torch.stack([DenseView(64, MEAN, STD).apply(*images.load(i))[0] for i in range(3)])
    with torch.no_grad():
        direct = resnet_stages(encoder, views)[-1]  # conv5, as the segmentation models read it
    calls[0] = 0
    assert torch.allclose(torch.from_numpy(np.array(first.features)).float(), direct, atol=1e-2)
    again = cached_dense_features(encoder, sha, images, DenseView(64, MEAN, STD), cache_dir=cache)
    assert calls[0] == 0  # read back: the encoder is not called
    assert np.array_equal(again.features, first.features)
    assert np.array_equal(again.targets, first.targets)
    other = cached_dense_features(encoder, sha, images, DenseView(96, MEAN, STD), cache_dir=cache)
    assert calls[0] == 1 and other.features.shape == (3, 512, 3, 3)
    cached_dense_features(encoder, "0" * 64, images, DenseView(64, MEAN, STD), cache_dir=cache)
    assert calls[0] == 2  # other weights: another entry
    assert len(list(cache.glob("*.json"))) == 3


def test_an_unfinished_entry_is_made_again(tmp_path):
    voc = make_voc(tmp_path, train=2, val=1)
    images = build_segmentation_set("voc2012", str(voc), "train")
    encoder, metadata = load_encoder("random:resnet18")
    calls = counting(encoder)
    view, cache = DenseView(64, MEAN, STD), tmp_path / "cache"
    cached_dense_features(encoder, metadata["weights_sha256"], images, view, cache_dir=cache)
    (meta,) = cache.glob("*.json")
    meta.unlink()  # interrupted before its key was written
    cached_dense_features(encoder, metadata["weights_sha256"], images, view, cache_dir=cache)
    assert calls[0] == 2 and meta.is_file()


def test_whole_image_views_of_different_sizes_are_refused(tmp_path):
    voc = make_voc(tmp_path, train=3, val=1)  # images of different aspect ratios
    images = build_segmentation_set("voc2012", str(voc), "train")
    encoder, metadata = load_encoder("random:resnet18")
    view = DenseView(64, MEAN, STD, crop=False)
    with pytest.raises(DataError, match="views of different sizes; use a centre-crop view"):
        cached_dense_features(
            encoder, metadata["weights_sha256"], images, view, cache_dir=tmp_path / "cache"
        )
    assert not list((tmp_path / "cache").glob("*"))  # no partial files left
