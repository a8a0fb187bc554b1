"""The loss of the first steps of a pretraining config, for the fast-path-vs-plain comparisons
(tests/pretrain/test_fast_path.py on CPU, tests/pretrain/test_gpu.py on CUDA)."""

import dataclasses

import torch

from pretrain import dist
from pretrain.config import PretrainConfig
from pretrain.presets import tiny_cpu
from pretrain.train import batch_to_device, build_run, train_step


def curve_config(**changes) -> PretrainConfig:
    """tiny_cpu (ResNet-18, 32 px synthetic data, small heads) at batch 32 for 4 epochs of 16
    steps, base lr 1.0, with `changes`."""
    base = dataclasses.replace(tiny_cpu(), batch_size=32, epochs=4, warmup_epochs=0.5, base_lr=1.0)
    return dataclasses.replace(base, **changes)


def loss_curve(config, run_dir, device: str, steps: int) -> torch.Tensor:
    """The loss of each of the first `steps` steps of `config` on `device` (one host sync)."""
    run = build_run(config, run_dir, torch.device(device), dist.DistInfo())
    run.model.train()
    losses = []
    for epoch in range(config.epochs):
        run.sampler.set_epoch(epoch)
        for batch in run.loader:
            loss, _ = train_step(run, *batch_to_device(run, batch))
            run.step += 1
            losses.append(loss.float())
            if len(losses) == steps:
                return torch.stack(losses).cpu()
    raise AssertionError(f"the config has fewer than {steps} steps")


def assert_same_course(plain: torch.Tensor, fast: torch.Tensor) -> None:
    """`fast` (bf16 and batched views) follows `plain` (fp32, views from the loader): the same
    start to bf16 rounding, the same course after, and `plain` really learns."""
    relative = (fast - plain).abs() / plain.abs()
    print("fp32 plain:", [round(v, 4) for v in plain.tolist()])
    print("bf16 fast :", [round(v, 4) for v in fast.tolist()])
    print(f"relative difference: median {relative.median():.4f}, max {relative.max():.4f}")
    assert torch.isfinite(fast).all()
    assert relative[:10].max() < 0.02
    assert relative.median() < 0.03 and relative.max() < 0.10
    assert plain[-10:].mean() < plain[:10].mean()
