"""The sample-predictions file: written by transfer/samples.py, read by results/samples.py."""

import hashlib

import numpy as np
import pytest
import torch

from results.samples import SAMPLE_COUNT, SamplesError, load_recorded, load_samples
from transfer.samples import SampleKeeper, save_samples


def depth_arrays(k=2, height=3, width=5):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (k, height, width, 3), dtype=np.uint8)
    truth = rng.uniform(0.5, 10, (k, height, width)).astype(np.float32)
    truth[0, 0, 0] = 0.0  # no measurement
    prediction = rng.uniform(0.5, 10, (k, height, width)).astype(np.float32)
    return images, truth, prediction


def test_round_trip_is_exact_and_the_entry_names_the_file(tmp_path):
    images, truth, prediction = depth_arrays()
    entry = save_samples(tmp_path / "run" / "samples.npz", images, truth, prediction, "depth")
    path = tmp_path / "run" / "samples.npz"
    assert entry == {
        "file": str(path.resolve()),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    loaded = load_samples(path)
    assert loaded["kind"] == "depth"
    for name, array in (("images", images), ("truth", truth), ("prediction", prediction)):
        assert loaded[name].dtype == array.dtype and np.array_equal(loaded[name], array)
    assert np.array_equal(load_recorded(entry)["truth"], truth)
    assert [p.name for p in path.parent.iterdir()] == ["samples.npz"]  # no temporary left


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda i, t, p: (i[..., :2], t, p), r"uint8 \[k, H, W, 3\]"),
        (lambda i, t, p: (i.astype(np.float32), t, p), "uint8"),
        (lambda i, t, p: (i, t[:, :2], p), r"truth must be float32 \[2, 3, 5\]"),
        (lambda i, t, p: (i, t, p.astype(np.float64)), "prediction must be float32"),
        (lambda i, t, p: (i[:0], t[:0], p[:0]), "at least one image"),
    ],
)
def test_bad_shapes_and_dtypes_are_refused_in_one_sentence(tmp_path, change, message):
    arrays = change(*depth_arrays())
    with pytest.raises(ValueError, match=message):
        save_samples(tmp_path / "samples.npz", *arrays, "depth")
    assert not (tmp_path / "samples.npz").exists()


def test_segmentation_needs_int64_classes_and_a_known_kind(tmp_path):
    images, truth, _ = depth_arrays()
    labels = np.zeros(truth.shape, np.int64)
    with pytest.raises(SamplesError, match="segmentation sample truth must be int64"):
        save_samples(tmp_path / "s.npz", images, truth, labels, "segmentation")
    with pytest.raises(SamplesError, match="unknown samples kind 'normals'"):
        save_samples(tmp_path / "s.npz", images, labels, labels, "normals")
    save_samples(tmp_path / "s.npz", images, labels, labels, "segmentation")


def test_keeper_keeps_the_first_images_in_order_and_pads_to_one_size(tmp_path):
    keeper = SampleKeeper("segmentation")
    sizes = [(4, 6), (5, 3), (2, 2), (4, 4), (7, 7)]  # the fifth is past SAMPLE_COUNT
    for n, (height, width) in enumerate(sizes):
        image = torch.full((3, height, width), n, dtype=torch.uint8)
        label = torch.full((height, width), n, dtype=torch.int64)
        keeper.keep(image, label, label + 1)
    assert keeper.full and len(keeper.kept) == SAMPLE_COUNT == 4
    loaded = load_recorded(keeper.save(tmp_path / "samples.npz"))
    assert loaded["images"].shape == (4, 5, 6, 3)  # the largest of the first four
    assert np.all(loaded["images"][1, :5, :3] == 1) and np.all(loaded["images"][1, :, 3:] == 255)
    assert np.all(loaded["truth"][1, :5, :3] == 1) and np.all(loaded["truth"][1, 5:] == 255)
    assert np.all(loaded["prediction"][0, :4, :6] == 1)
    assert np.all(loaded["prediction"][0, 4:] == 255)  # padding: ignore, not a class


def test_depth_padding_is_no_measurement(tmp_path):
    keeper = SampleKeeper("depth", count=2)
    keeper.keep(
        np.zeros((3, 2, 2), np.uint8), np.ones((2, 2), np.float32), np.ones((2, 2), np.float32)
    )
    keeper.keep(
        np.zeros((3, 3, 1), np.uint8), np.ones((3, 1), np.float32), np.ones((3, 1), np.float32)
    )
    loaded = load_samples(keeper.save(tmp_path / "samples.npz")["file"])
    assert loaded["truth"].shape == (2, 3, 2)
    assert loaded["truth"][0, 2].tolist() == [0.0, 0.0] and loaded["prediction"][1, :, 1].sum() == 0


def test_a_file_that_is_not_a_samples_file_is_refused(tmp_path):
    path = tmp_path / "samples.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(SamplesError, match="not a readable samples file"):
        load_samples(path)
    np.savez(path, images=np.zeros((1, 2, 2, 3), np.uint8))
    with pytest.raises(SamplesError, match="not a readable samples file"):
        load_samples(path)
