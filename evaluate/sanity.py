"""Proof that a frozen-encoder evaluation left the encoder frozen.

BYOL v3, App. C.1: linear evaluation trains on a frozen representation, "neither the weights nor
the batch-normalisation statistics" change. A common bug leaves BN in train mode: no weight moves,
but every forward pass shifts the running statistics. `snapshot` copies every parameter and
buffer (BN running mean/var and step counters included) before a run; `assert_unchanged` compares
them bit for bit afterwards and names whatever changed.
"""

from __future__ import annotations

import torch
from torch import nn

from results.errors import ByolBenchError


class EncoderChangedError(ByolBenchError, AssertionError):
    """A frozen encoder's tensors changed during an evaluation (a bug in the evaluation)."""


def snapshot(encoder: nn.Module) -> dict[str, torch.Tensor]:
    """CPU copies of every parameter and buffer of `encoder`, by state-dict name."""
    return {name: tensor.detach().cpu().clone() for name, tensor in encoder.state_dict().items()}


def assert_unchanged(encoder: nn.Module, before: dict[str, torch.Tensor]) -> None:
    """Raise EncoderChangedError naming every tensor that differs from `before` (or is new/gone)."""
    after = encoder.state_dict()
    changed = sorted(
        name
        for name in set(before) | set(after)
        if name not in before
        or name not in after
        or not torch.equal(before[name], after[name].detach().cpu())
    )
    if changed:
        raise EncoderChangedError(
            f"the frozen encoder changed during evaluation: {len(changed)} tensors, e.g. "
            f"{changed[:10]}; it must stay in eval mode with requires_grad False"
        )
