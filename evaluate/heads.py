"""Linear probe heads: one classifier per candidate learning rate, all trained in one pass.

BYOL v3, App. C.1: a linear classifier on the frozen representation, SGD with Nesterov momentum
0.9, no weight decay, learning rate chosen among a grid (protocol byol-paper/2:
{1.6, 1.2, 0.8, 0.4, 0.3, 0.2, 0.1, 0.05} at batch 1024, evaluate/linear.py). The paper states
neither the schedule nor the initialisation; both follow the authors' code: cosine decay to 0
without warm-up (byol/utils/schedules.py, as pretrain/schedule.py:warmup_cosine) and haiku's
Linear init, weights ~ truncated normal (std 1/sqrt(D), cut at 2 std), zero bias
(byol/eval_experiment.py).

The sweep costs about one run: every head sees the same features of each batch, so one backbone
forward serves every LR. The heads are separate nn.Linear modules, each in its own SGD parameter
group with its own LR, stacked into one [n, C, D] matmul per step; the loss is the sum of the
heads' mean cross-entropies, so each head gets exactly the gradient of its own loss and follows
the trajectory of a single-LR run with the same seed (tests/evaluate/test_heads.py checks it).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from evaluate.metrics import percent, topk_correct
from pretrain.sampling import epoch_order
from pretrain.schedule import warmup_cosine
from pretrain.step_log import TrainerLog

Batches = Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]]  # epoch -> (x [B,D], y [B])


class LinearHeads(nn.Module):
    """`num_heads` linear classifiers on the same features: [B, D] -> logits [num_heads, B, C].

    Every head starts from the same weights, drawn from `seed` (haiku's Linear init).
    """

    def __init__(self, num_heads: int, feature_dim: int, num_classes: int, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        std = 1.0 / math.sqrt(feature_dim)
        weight = torch.empty(num_classes, feature_dim)
        nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std, generator=generator)
        self.heads = nn.ModuleList(nn.Linear(feature_dim, num_classes) for _ in range(num_heads))
        with torch.no_grad():
            for head in self.heads:
                head.weight.copy_(weight)
                head.bias.zero_()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        weight = torch.stack([head.weight for head in self.heads])  # [n, C, D]
        bias = torch.stack([head.bias for head in self.heads])  # [n, C]
        return torch.einsum("bd,ncd->nbc", features, weight) + bias.unsqueeze(1)  # [n, B, C]

    def finite(self) -> list[bool]:
        """Per head: are all its weights finite (False: that LR diverged)."""
        return [
            all(bool(torch.isfinite(param).all()) for param in head.parameters())
            for head in self.heads
        ]


def fit_heads(
    batches: Batches,
    *,
    lrs: Sequence[float],
    feature_dim: int,
    num_classes: int,
    epochs: int,
    steps_per_epoch: int,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    desc: str = "linear probe",
    log: TrainerLog | None = None,
) -> LinearHeads:
    """Train one head per learning rate in `lrs` (the actual, batch-scaled values) at once.

    `batches(epoch)` yields (features [B, D], labels [B]) on `device`; SGD with Nesterov momentum,
    each head's LR on a cosine schedule from its own `lrs[i]` to 0 over epochs x steps_per_epoch.
    `log` (--log-to) gets the mean loss over the heads and the first head's LR per step.
    """
    heads = LinearHeads(len(lrs), feature_dim, num_classes, seed).to(device)
    groups = [{"params": head.parameters(), "lr": lr} for head, lr in zip(heads.heads, lrs)]
    optimizer = torch.optim.SGD(
        groups, lr=lrs[0], momentum=momentum, nesterov=True, weight_decay=weight_decay
    )
    total_steps, step, seen, started = epochs * steps_per_epoch, 0, 0, time.monotonic()
    bar = tqdm(total=total_steps, desc=desc, unit="step", dynamic_ncols=True)
    for epoch in range(epochs):
        for features, labels in batches(epoch):
            for group, lr in zip(optimizer.param_groups, lrs):
                group["lr"] = warmup_cosine(step, total_steps, lr)
            logits = heads(features)  # [n, B, C]
            # Sum over heads of each head's mean cross-entropy: head i's gradient is its own.
            loss = (
                F.cross_entropy(logits.flatten(0, 1), labels.repeat(len(lrs)), reduction="sum")
                / labels.numel()
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step, seen = step + 1, seen + labels.numel()
            bar.update(1)
            if log is not None:
                lr = optimizer.param_groups[0]["lr"]
                log.step(step, last=step == total_steps, loss=loss.item() / len(lrs), lr=lr)
            if step % 20 == 0 or step == total_steps:
                rate = seen / max(time.monotonic() - started, 1e-9)
                lr = optimizer.param_groups[0]["lr"]  # the first head's; the others scale alike
                bar.set_postfix(
                    loss=f"{loss.item() / len(lrs):.4f}", lr=f"{lr:.3g}", img_s=f"{rate:.0f}"
                )
    bar.close()
    return heads


@torch.no_grad()
def evaluate_heads(
    heads: LinearHeads, features: torch.Tensor, labels: torch.Tensor, batch_size: int = 4096
) -> list[dict[str, float]]:
    """Top-1 and top-5 (%) of every head on (features [N, D], labels [N]); None if diverged."""
    device = next(heads.parameters()).device
    counts = {1: torch.zeros(len(heads.heads)), 5: torch.zeros(len(heads.heads))}
    for start in range(0, len(labels), batch_size):
        chunk = features[start : start + batch_size].to(device)
        correct = topk_correct(heads(chunk), labels[start : start + batch_size].to(device))
        for k in counts:
            counts[k] += correct[k].cpu()
    return [
        {"top1": percent(counts[1][i], len(labels)), "top5": percent(counts[5][i], len(labels))}
        if finite
        else {"top1": None, "top5": None}
        for i, finite in enumerate(heads.finite())
    ]


@torch.no_grad()
def head_scores(
    heads: LinearHeads, features: torch.Tensor, head: int = 0, batch_size: int = 4096
) -> torch.Tensor:
    """Logits [N, C] (on the CPU) of one head on features [N, D]."""
    device = next(heads.parameters()).device
    chunks = [
        heads(features[start : start + batch_size].to(device))[head].float().cpu()
        for start in range(0, len(features), batch_size)
    ]
    return torch.cat(chunks)


def tensor_batches(
    features: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int, device
) -> tuple[Batches, int]:
    """(batches, steps per epoch) over in-memory features, in `epoch_order` (last batch smaller).

    The features move to `device` once; each epoch's order depends only on (seed, epoch, N), the
    same order the image path (pretrain/sampling.py:SeededBatches) uses.
    """
    features, labels = features.to(device), labels.to(device)

    def batches(epoch: int):
        order = epoch_order(len(labels), seed, epoch).to(device)
        for start in range(0, len(labels), batch_size):
            index = order[start : start + batch_size]
            yield features[index], labels[index]

    return batches, -(-len(labels) // batch_size)
