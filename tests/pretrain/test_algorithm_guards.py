"""Guards of BYOL's algorithm and of exact resume: each test fails on the bug its docstring names
(issue 20, item 6: each bug, put in on purpose, once passed the whole suite)."""

import random

import numpy as np
import pytest
import torch

from pretrain import dist
from pretrain.augment import byol_views
from pretrain.checkpoint import load_checkpoint, load_latest_good, save_checkpoint
from pretrain.data import SyntheticDataset, dataset_stats
from pretrain.ema import tau_at
from pretrain.state import rng_state, training_state
from pretrain.train import batch_to_device, build_run, prepare_run_dir, restore, save, train_step
from pretrain.views import TwoCrops, TwoViews

MEAN, STD = dataset_stats("imagenet")


def _run(tiny_config, run_dir, **overrides):
    config = tiny_config(num_workers=0, **overrides)
    run_dir = prepare_run_dir(run_dir, config, dist.DistInfo())
    return build_run(config, run_dir, torch.device("cpu"), dist.DistInfo())


def test_one_step_updates_the_target_with_the_loops_tau_after_the_optimiser_step(
    tiny_config, tmp_path
):
    """(a) tau held at tau_base; (b) the target update before the optimiser step, or removed:
    after one train_step, target == tau x target_before + (1 - tau) x online_after_step."""
    run = _run(tiny_config, tmp_path / "run", warmup_epochs=0.0)
    run.step = 7  # mid-run: tau_at(7) is well above tau_base
    tau = tau_at(run.step, run.schedule.total_steps, run.config.tau_base)
    assert tau - run.config.tau_base > 1e-3
    with torch.no_grad():  # a target apart from the online network, so tau's value shows
        for parameter in run.network.target_parameters():
            parameter.add_(0.5 * torch.randn_like(parameter))
    target_before = [p.detach().clone() for p in run.network.target_parameters()]
    online_before = [p.detach().clone() for p in run.network.online_modules().parameters()]
    run.sampler.set_epoch(1)
    run.model.train()
    train_step(run, *batch_to_device(run, next(iter(run.loader))))
    online_after = [p.detach() for p in run.network.online_modules().parameters()]
    moved = max((a - b).abs().max().item() for a, b in zip(online_after, online_before))
    assert moved > 1e-4  # the optimiser step changed the online network
    for target, before, online in zip(run.network.target_parameters(), target_before, online_after):
        expected = tau * before + (1 - tau) * online
        torch.testing.assert_close(target.detach(), expected, rtol=0, atol=1e-6)


class _SameImage:
    """An ImageDataset whose every index holds one image: views differ only by their draws."""

    num_classes = 2

    def __init__(self, size: int = 40) -> None:
        self.image = SyntheticDataset(num_images=1, image_size=size, num_classes=2).load(0)[0]

    def __len__(self) -> int:
        return 4

    def load(self, index: int):
        return self.image, 0


def test_two_indices_of_one_epoch_draw_different_augmentations():
    """(c) every sample of an epoch seeded with the same seed (one draw for all images)."""
    views = byol_views()
    two_views = TwoViews(_SameImage(), *views, 32, 5, MEAN, STD)
    first, second = two_views[(3, 0)], two_views[(3, 1)]
    assert (first[0] - second[0]).abs().max() > 1e-2 and (first[1] - second[1]).abs().max() > 1e-2
    two_crops = TwoCrops(_SameImage(), *views, 32, 5)
    params_0, params_1 = two_crops[(3, 0)][1], two_crops[(3, 1)][1]
    assert params_0["brightness"] != params_1["brightness"]
    assert not torch.equal(two_crops[(3, 0)][0], two_crops[(3, 1)][0])  # different crops


def test_resume_restores_the_checkpoints_rng_states(tiny_config, tmp_path):
    """(d) RNG state not restored on resume: after restore, the RNG states are the checkpoint's."""
    run = _run(tiny_config, tmp_path / "run")
    torch.manual_seed(11), random.seed(11), np.random.seed(11)
    run.step = 3
    save(run)
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["rng"]
    torch.manual_seed(99), random.seed(99), np.random.seed(99)  # what a new process would have
    torch.rand(5), random.random(), np.random.rand()
    fresh = _run(tiny_config, tmp_path / "run")
    restore(fresh)
    restored = rng_state()
    assert fresh.step == 3
    assert torch.equal(restored["torch"], saved["torch"])
    assert restored["python"] == saved["python"]
    assert torch.equal(restored["numpy"], saved["numpy"])
    assert restored["numpy_pos"] == saved["numpy_pos"]


class _TornWriter:
    """A file handle that writes half of what it is given, then fails (a full disk, a kill)."""

    def __init__(self, handle) -> None:
        self.handle = handle

    def write(self, data) -> int:
        self.handle.write(bytes(data)[: len(data) // 2])
        self.handle.flush()
        raise OSError("No space left on device (simulated)")

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()


def test_a_checkpoint_write_that_fails_halfway_leaves_no_torn_last_pt(tmp_path, monkeypatch):
    """(e) last.pt written in place instead of tmp + os.replace: a write that fails halfway must
    leave the old checkpoint loadable and no torn last.pt (previous.pt must not be needed to hide
    one)."""
    import builtins
    import io

    old = {"step": 1, "weights": torch.arange(50000.0)}
    save_checkpoint(tmp_path, old)
    real_open = builtins.open

    def failing_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if "w" in mode and str(tmp_path) in str(file):
            return _TornWriter(handle)
        return handle

    monkeypatch.setattr(builtins, "open", failing_open)
    monkeypatch.setattr(io, "open", failing_open)
    with pytest.raises((OSError, RuntimeError)):
        save_checkpoint(tmp_path, {"step": 2, "weights": torch.zeros(50000)})
    monkeypatch.undo()
    for path in sorted((tmp_path / "checkpoints").glob("*.pt")):
        load_checkpoint(path)  # every checkpoint file there is whole (raises on a torn one)
    last = tmp_path / "checkpoints" / "last.pt"
    if last.exists():
        assert load_checkpoint(last)["step"] == 1
    assert load_latest_good(tmp_path)["step"] == 1
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))  # no temporary file left


def test_training_state_carries_the_rng_states(tiny_config, tmp_path):
    """The checkpoint's RNG states are the process's at save time (what (d) restores)."""
    run = _run(tiny_config, tmp_path / "run")
    torch.manual_seed(5)
    state = training_state(run)
    assert torch.equal(state["rng"]["torch"], torch.get_rng_state())
