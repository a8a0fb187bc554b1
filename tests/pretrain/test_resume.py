"""Exact resume: a run killed with SIGKILL mid-epoch and restarted ends bit-identical to an
uninterrupted run; a damaged last.pt falls back to the previous good checkpoint."""

import logging
import signal
import subprocess
import sys
import time

import pytest
import torch

from pretrain.checkpoint import CheckpointError, load_checkpoint, load_latest_good
from pretrain.train import train
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def final_state(run_dir) -> dict:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")


def assert_bit_identical(state_a: dict, state_b: dict) -> None:
    assert state_a["step"] == state_b["step"]
    for key in ("model", "probe"):
        for name, tensor in state_a[key].items():
            diff = (tensor.double() - state_b[key][name].double()).abs().max().item()
            assert diff == 0.0, f"{key}.{name} differs by {diff}"
    momentum_a = [s["momentum_buffer"] for s in state_a["optimizer"]["state"].values()]
    momentum_b = [s["momentum_buffer"] for s in state_b["optimizer"]["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(momentum_a, momentum_b))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Reference: the tiny run (3 epochs x 5 steps) without interruption, in-process."""
    import dataclasses

    from pretrain.presets import tiny_cpu

    config = dataclasses.replace(
        tiny_cpu(), train_subset_per_class=8, epochs=3, ckpt_every_min=0.0, log_every_steps=1
    )
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    train(config, run_dir, "cpu")
    return config, final_state(run_dir)


def launch_args(run_dir, num_workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pretrain.launch",
        "--preset",
        "tiny_cpu",
        "--run-dir",
        str(run_dir),
        "--device",
        "cpu",
        "--train-subset-per-class",
        "8",
        "--epochs",
        "3",
        "--ckpt-every-min",
        "0",
        "--log-every-steps",
        "1",
        "--num-workers",
        str(num_workers),
    ]


def wait_for_step(run_dir, process: subprocess.Popen, step: int, timeout: float = 300) -> None:
    """Poll last.pt until it holds at least ``step`` (the file is replaced atomically)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be killed"
        try:
            if load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] >= step:
                return
        except (CheckpointError, FileNotFoundError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"step {step} not reached in {timeout} s")


def test_sigkill_mid_epoch_then_restart_is_bit_identical(tmp_path, uninterrupted):
    config, reference = uninterrupted
    run_dir = tmp_path / "killed"
    env = {"PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"}
    process = subprocess.Popen(
        launch_args(run_dir, num_workers=0),
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_step(run_dir, process, step=7)  # epoch 2 of 3 (5 steps per epoch)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    killed_at = load_latest_good(run_dir)["step"]
    assert 7 <= killed_at < 15, killed_at
    # Restart with loader workers: the result must not depend on them or on where it resumed.
    result = subprocess.run(
        launch_args(run_dir, num_workers=2),
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed at step {killed_at}" in result.stderr
    assert_bit_identical(final_state(run_dir), reference)
    exports = list((run_dir / "exports").glob("backbone-*.pt"))
    assert len(exports) == 1


def test_damaged_last_checkpoint_falls_back_to_previous(tmp_path, uninterrupted, caplog):
    config, reference = uninterrupted
    import dataclasses

    run_dir = tmp_path / "damaged"
    train(dataclasses.replace(config, max_steps=8), run_dir, "cpu")
    last = run_dir / "checkpoints" / "last.pt"
    assert load_checkpoint(last)["step"] == 8
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # truncated
    with caplog.at_level(logging.INFO):
        train(config, run_dir, "cpu")
    assert "skipping damaged checkpoint" in caplog.text
    assert "resumed at step 7" in caplog.text
    assert_bit_identical(final_state(run_dir), reference)


def test_flipped_bytes_are_detected_by_the_digest(tmp_path, uninterrupted):
    config, _ = uninterrupted
    import dataclasses

    run_dir = tmp_path / "flipped"
    train(dataclasses.replace(config, max_steps=2), run_dir, "cpu")
    last = run_dir / "checkpoints" / "last.pt"
    payload = bytearray(last.read_bytes())
    # Flip bytes inside the largest stored tensor (a conv weight) while keeping the zip readable.
    position = len(payload) // 2
    payload[position : position + 16] = bytes(16)
    last.write_bytes(bytes(payload))
    with pytest.raises(CheckpointError):
        load_checkpoint(last)
    assert load_latest_good(run_dir)["step"] == 1  # previous.pt
