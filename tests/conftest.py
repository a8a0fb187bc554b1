"""Shared fixtures: tiny configs that run the real code paths in seconds on CPU."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent

# Results must not depend on how many cores the test machine has.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def tiny_config():
    """A factory for tiny_cpu configs with overrides: 5 steps per epoch on 80 synthetic images."""
    from pretrain.presets import tiny_cpu

    def make(**overrides):
        base = dataclasses.replace(
            tiny_cpu(), train_subset_per_class=8, epochs=3, ckpt_every_min=0.0, log_every_steps=1
        )
        return dataclasses.replace(base, **overrides)

    return make


def run_cli(module: str, *args: str, timeout: float = 600, check: bool = False):
    """Run ``python -m module args`` from the repo root; returns the CompletedProcess."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "2"}
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{module} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


def run_quick_check(run_dir: Path, max_steps: int, *extra: str):
    """The contract's quick check, `pretrain.launch --preset tiny_cpu --dataset synthetic
    --run-dir DIR --max-steps N [extra]`, which must succeed; returns the CompletedProcess."""
    quick = ["--preset", "tiny_cpu", "--dataset", "synthetic", "--run-dir", str(run_dir)]
    return run_cli("pretrain.launch", *quick, "--max-steps", str(max_steps), *extra, check=True)
