"""NYU Depth v2 readers on generated files in the real layouts, and their bad-input sentences."""

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from pretrain.data import DataError
from tests.transfer.depth.layouts import (
    pattern_images,
    write_frames,
    write_labelled_mat,
    write_splits,
)
from transfer.depth.data import DEPTH_SOURCES, build_depth_set, read_frames, read_labelled

TRAIN, TEST = [1, 3, 4, 6], [2, 5]  # 1-based, as splits.mat holds them


@pytest.fixture
def labelled(tmp_path):
    images, depths = pattern_images(6, height=48, width=64)
    write_labelled_mat(tmp_path, images, depths, TRAIN, TEST)
    return tmp_path, images, depths


def test_the_generated_mat_has_matlabs_v73_layout(labelled):
    folder, images, _ = labelled
    path = folder / "nyu_depth_v2_labeled.mat"
    assert path.read_bytes()[:19] == b"MATLAB 7.3 MAT-file"
    with pytest.raises(NotImplementedError):  # scipy reads the header and refuses v7.3
        scipy.io.loadmat(path)
    with h5py.File(path, "r") as data:
        assert data["images"].shape == (6, 3, 64, 48) and data["images"].dtype == np.uint8
        assert data["depths"].shape == (6, 64, 48) and data["depths"].dtype == np.float32
        assert {"rawDepths", "labels"} <= set(data.keys())
        assert data["images"].attrs["MATLAB_class"] == b"uint8"
        assert data["depths"].attrs["MATLAB_class"] == b"single"
        # element (n, c, w, h) of h5py's view is MATLAB's images(h, w, c, n)
        assert data["images"][2, 1, 10, 5] == images[2, 5, 10, 1]
    splits = scipy.io.loadmat(folder / "splits.mat")
    assert splits["trainNdxs"].shape == (4, 1) and splits["testNdxs"].ravel().tolist() == TEST


@pytest.mark.parametrize("split, numbers", [("train", TRAIN), ("test", TEST)])
def test_labelled_split_reads_back_the_right_frames_exactly(labelled, split, numbers):
    folder, images, depths = labelled
    frames = read_labelled(folder, split)
    assert frames.name == "nyu-labelled" and len(frames) == len(numbers)
    assert frames.ids == tuple(f"{n:04d}" for n in numbers)
    for index, number in enumerate(numbers):
        image, depth = frames.load(index)
        assert image.dtype == torch.uint8 and image.shape == (3, 48, 64)
        assert depth.dtype == torch.float32 and depth.shape == (48, 64)
        assert np.array_equal(image.permute(1, 2, 0).numpy(), images[number - 1])
        assert np.array_equal(depth.numpy(), depths[number - 1])


def test_the_mat_file_path_itself_works_and_subset_and_fingerprint(labelled):
    folder, images, _ = labelled
    whole = build_depth_set("labelled", folder / "nyu_depth_v2_labeled.mat", "train")
    assert whole.ids == read_labelled(folder, "train").ids and DEPTH_SOURCES[0] == "labelled"
    part = whole.subset([2, 0], "two")
    assert part.ids == ("0004", "0001") and part.split == "two"
    assert np.array_equal(part.load(0)[0].permute(1, 2, 0).numpy(), images[3])
    assert part.fingerprint() != whole.fingerprint()
    assert whole.fingerprint() == read_labelled(folder, "train").fingerprint()


class _Pairs(Dataset):
    def __init__(self, frames):
        self.frames = frames

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, index):
        return self.frames.load(index)


def test_a_two_worker_dataloader_reads_the_labelled_set(labelled):
    folder, images, depths = labelled
    frames = read_labelled(folder, "train")
    frames.load(0)  # the parent has its own handle open before the workers fork
    loader = DataLoader(_Pairs(frames), batch_size=2, num_workers=2)
    batches = list(loader)
    loaded_images = torch.cat([batch[0] for batch in batches]).permute(0, 2, 3, 1).numpy()
    loaded_depths = torch.cat([batch[1] for batch in batches]).numpy()
    rows = [n - 1 for n in TRAIN]
    assert np.array_equal(loaded_images, images[rows])
    assert np.array_equal(loaded_depths, depths[rows])


def test_frames_read_back_from_the_listed_sync_folder(tmp_path):
    images, depths = pattern_images(4, height=48, width=64, seed=1)
    depths[1, :5, :7] = 0.0  # no Kinect measurement
    sync = write_frames(tmp_path, images, depths, ["kitchen_0028b", "kitchen_0028b", "b", "b"])
    frames = build_depth_set("frames", sync, "train")
    assert frames.name == "nyu-frames"
    assert frames.ids == ("kitchen_0028b/00000", "kitchen_0028b/00001", "b/00000", "b/00001")
    image, depth = frames.load(1)
    stored = np.asarray(Image.open(sync / "kitchen_0028b" / "rgb_00001.jpg"))
    assert np.array_equal(image.permute(1, 2, 0).numpy(), stored)  # JPEG: compare to the file
    millimetres = np.round(depths[1] * 1000).astype(np.uint16)
    assert np.array_equal(depth.numpy(), millimetres.astype(np.float32) / 1000)
    assert (depth[:5, :7] == 0).all() and (depth[5:] > 0).all()
    (sync / "nyudepthv2_train_files_with_gt.txt").unlink()  # no list: every pair found
    assert sorted(read_frames(sync, "train").ids) == sorted(frames.ids)


def _message(call) -> str:
    with pytest.raises(DataError) as error:
        call()
    return str(error.value)


def test_bad_labelled_input_says_what_and_where(tmp_path):
    images, depths = pattern_images(3, height=8, width=12)
    no_depths = tmp_path / "no_depths"
    write_labelled_mat(no_depths, images, depths, [1], [2], omit=("depths",))
    message = _message(lambda: read_labelled(no_depths, "test"))
    assert "no 'depths' variable" in message and "nyu_depth_v2_labeled.mat" in message
    no_images = tmp_path / "no_images"
    write_labelled_mat(no_images, images, depths, [1], [2], omit=("images",))
    assert "no 'images' variable" in _message(lambda: read_labelled(no_images, "train"))
    out_of_range = tmp_path / "range"
    write_labelled_mat(out_of_range, images, depths, [1, 2], [4])
    assert "testNdxs holds 4, outside" in _message(lambda: read_labelled(out_of_range, "test"))
    write_splits(out_of_range, [0, 1], [2])  # 0 is not a 1-based frame number
    assert "trainNdxs holds 0, outside" in _message(lambda: read_labelled(out_of_range, "train"))
    assert "does not exist" in _message(lambda: read_labelled(tmp_path / "empty", "train"))
    no_splits = tmp_path / "no_splits"
    write_labelled_mat(no_splits, images, depths, [1], [2], splits=False)
    assert "splits.mat does not exist" in _message(lambda: read_labelled(no_splits, "train"))
    assert "unknown NYU labelled split" in _message(lambda: read_labelled(no_splits, "val"))


def test_a_v5_mat_and_mismatched_counts_are_refused(tmp_path):
    v5 = tmp_path / "v5"
    v5.mkdir()
    scipy.io.savemat(v5 / "nyu_depth_v2_labeled.mat", {"images": np.zeros((2, 2)), "depths": 1.0})
    write_splits(v5, [1], [2])
    message = _message(lambda: read_labelled(v5, "train"))
    assert "older MATLAB .mat" in message and "v7.3" in message and str(v5) in message
    text = tmp_path / "text"
    text.mkdir()
    (text / "nyu_depth_v2_labeled.mat").write_text("hello")
    write_splits(text, [1], [2])
    assert "not an HDF5 file" in _message(lambda: read_labelled(text, "train"))
    images, depths = pattern_images(3, height=8, width=12)
    mismatched = tmp_path / "mismatched"
    write_labelled_mat(mismatched, images, depths, [1], [2], omit=("depths",))
    with h5py.File(mismatched / "nyu_depth_v2_labeled.mat", "a") as data:
        data["depths"] = np.ones((2, 12, 8), np.float32)
    assert "same N" in _message(lambda: read_labelled(mismatched, "train"))


def test_bad_frames_input_says_what_and_where(tmp_path):
    images, depths = pattern_images(2, height=8, width=12)
    sync = write_frames(tmp_path, images, depths, ["a", "a"])
    assert "only a train split" in _message(lambda: read_frames(sync, "test"))
    (sync / "a" / "sync_depth_00001.png").unlink()
    message = _message(lambda: read_frames(sync, "train"))
    assert "1 files listed" in message and "sync_depth_00001.png" in message
    Image.fromarray(np.zeros((8, 12), np.uint8)).save(sync / "a" / "sync_depth_00001.png")
    eight_bit = read_frames(sync, "train")
    assert "must be 16-bit" in _message(lambda: eight_bit.load(1))
    (sync / "nyudepthv2_train_files_with_gt.txt").write_text("/a/rgb_00000.jpg\n")
    assert "line 1" in _message(lambda: read_frames(sync, "train"))
    assert "no <scene>/rgb_NNNNN.jpg" in _message(lambda: read_frames(tmp_path, "train"))
    assert "unknown NYU depth source" in _message(lambda: build_depth_set("raw", sync, "train"))
