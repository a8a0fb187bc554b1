"""Exports of the 12-block test ViT (vit_tiny12_test) as SelfPatch (no [CLS], no final norm) and
DINO (both) write them, with LayerNorm values off their defaults so copies show."""

from __future__ import annotations

from pathlib import Path

import torch

from pretrain.backbones import build_backbone
from pretrain.checkpoint import export_backbone

ARCH = "vit_tiny12_test"


def make_vit_export(root: Path, *, selfpatch: bool = True, seed: int = 1) -> Path:
    """An export of vit_tiny12_test: SelfPatch's layout (`selfpatch`) or DINO's."""
    torch.manual_seed(seed)
    flags = {"cls_token": not selfpatch, "final_norm": not selfpatch}
    encoder, _ = build_backbone(ARCH, **flags)
    for name, parameter in encoder.named_parameters():
        if "norm" in name:
            parameter.data.uniform_(0.5, 1.5)
    method = "selfpatch" if selfpatch else "dino"
    metadata = {"label": f"tiny-{method}", "arch": ARCH, "method": method, **flags}
    return export_backbone(root, encoder.state_dict(), metadata)
