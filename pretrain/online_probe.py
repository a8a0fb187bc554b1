"""Online linear probe: a linear classifier on detached online features, for monitoring only.

As in the authors' code, a linear classifier is trained during pretraining on the stop-gradient
representation of the online encoder, so its accuracy tracks representation quality without a
separate evaluation job. It never sends a gradient into the encoder, so it does not change BYOL.
It is NOT the linear-evaluation protocol (see evaluate/linear.py): its inputs are augmented views
and the encoder moves under it.

The authors (deepmind-research/byol, byol_experiment.py) train the classifier jointly with the
network: its cross-entropy is added to the BYOL loss and LARS (the network's optimiser and learning
rate schedule) updates both. Ours has its own optimiser: see DEVIATION(online-probe-optimiser).
"""

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm


def build_probe(feature_dim: int, num_classes: int, lr: float) -> tuple[nn.Linear, torch.optim.SGD]:
    """The probe head and its optimiser."""
    probe = nn.Linear(feature_dim, num_classes)
    # DEVIATION(online-probe-optimiser): SGD (momentum 0.9, constant lr) of its own, not the
    # authors' joint LARS step; it only monitors, so BYOL's updates are unchanged either way.
    optimizer = torch.optim.SGD(probe.parameters(), lr=lr, momentum=0.9)
    return probe, optimizer


def probe_step(
    probe: nn.Linear, optimizer: torch.optim.Optimizer, features: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on detached features; returns (loss, number correct), both on device."""
    logits = probe(features.detach().float())  # [B, num_classes]
    loss = F.cross_entropy(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), (logits.argmax(dim=1) == labels).sum()


@torch.no_grad()
def probe_accuracy(
    encoder: nn.Module, probe: nn.Linear, loader, device: torch.device, show_progress: bool = True
) -> float:
    """Top-1 (%) of the probe on the encoder's eval-mode features over ``loader``."""
    was_training = encoder.training
    encoder.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    total = 0
    for images, labels in tqdm(
        loader, desc="online-probe eval", leave=False, disable=not show_progress
    ):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        correct += (probe(encoder(images).float()).argmax(dim=1) == labels).sum()
        total += labels.numel()
    encoder.train(was_training)
    return 100.0 * correct.item() / max(total, 1)
