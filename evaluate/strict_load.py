"""Strict loading of backbone weights: explicit keys, compared, then strict=True.

docs/architecture.md, Conventions, rule 18.

A state dict is compared with the registry model's keys and shapes before anything is loaded; any
missing, unexpected or mis-shaped key raises CheckpointError naming them (the first 10 of each),
so a probe can never run on half-loaded weights. `infer_arch` finds the registry entry whose keys
and shapes equal a foreign state dict's.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

from pretrain.backbones import BACKBONES, build_backbone, is_vit
from pretrain.checkpoint import CheckpointError

_SHOW_KEYS = 10  # keys listed per kind in a mismatch message


def parse_arch(text: str) -> tuple[str, bool]:
    """`resnet18` -> ("resnet18", False); `resnet18:cifar` -> ("resnet18", True) (CIFAR stem)."""
    name, _, stem = text.partition(":")
    if name not in BACKBONES or stem not in ("", "cifar") or (stem and is_vit(name)):
        raise CheckpointError(
            f"unknown architecture {text!r}; use one of {', '.join(BACKBONES)}, optionally with "
            "':cifar' for the 3x3 stride-1 stem of a ResNet (e.g. resnet18:cifar)"
        )
    return name, stem == "cifar"


@functools.cache
def _shapes(arch: str, cifar_stem: bool, **vit_options) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # shapes only, no memory; a ViT has no CIFAR stem
        model, _ = build_backbone(arch, cifar_stem=cifar_stem and not is_vit(arch), **vit_options)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def infer_arch(
    state_dict: dict[str, torch.Tensor], path: Path | str = "weights"
) -> tuple[str, bool]:
    """(arch, cifar_stem) of the registry entry whose keys and shapes equal the state dict's."""
    shapes = {key: tuple(value.shape) for key, value in state_dict.items()}
    conv1 = shapes.get("conv1.weight")
    cifar_stem = conv1 is not None and conv1[-1] == 3
    for arch in BACKBONES:
        if _shapes(arch, cifar_stem) == shapes:
            return arch, cifar_stem
    raise CheckpointError(
        f"{path}: cannot infer the architecture from its {len(shapes)} keys (first: "
        f"{sorted(shapes)[:_SHOW_KEYS]}); pass --arch NAME (one of {', '.join(BACKBONES)}, "
        "':cifar' for the CIFAR stem)"
    )


def check_keys(
    expected: dict[str, tuple[int, ...]], state_dict: dict[str, torch.Tensor], what: str
) -> None:
    """Raise CheckpointError listing missing, unexpected and mis-shaped keys (first 10 of each)."""
    got = {key: tuple(value.shape) for key, value in state_dict.items()}
    missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    reshaped = [
        f"{key}: file {got[key]}, model {expected[key]}"
        for key in sorted(set(got) & set(expected))
        if got[key] != expected[key]
    ]
    if missing or unexpected or reshaped:
        parts = [
            f"{len(items)} {kind} {items[:_SHOW_KEYS]}"
            for kind, items in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("keys with other shapes", reshaped),
            )
            if items
        ]
        raise CheckpointError(
            f"{what}: {'; '.join(parts)}. Pass the right --arch (e.g. resnet50, resnet18:cifar) or "
            "save the weights as a torchvision/timm ResNet state dict (the foreign format "
            "evaluate/features.py reads)"
        )


def build_strict(
    arch: str,
    cifar_stem: bool,
    state_dict: dict,
    path: Path | str,
    *,
    padding: str = "torchvision",
    stem_padding: int | None = None,
    vit_options: dict | None = None,
) -> nn.Module:
    """The registry model `arch` holding exactly `state_dict` (train mode, as built), with the
    weights' padding mode ("tf-same" for the authors' Haiku ResNet) and stem padding (solo-learn's
    CIFAR stem), or a ViT's [CLS]/final-norm options (pretrain/backbones.py:vit_options), as their
    export or import metadata states (pretrain/backbones.py)."""
    vit_options = vit_options or {}
    stem = " with the CIFAR stem" if cifar_stem else ""
    options = "".join(f", {key} {value}" for key, value in sorted(vit_options.items()))
    expected = _shapes(arch, cifar_stem, **vit_options)
    check_keys(expected, state_dict, f"{path} does not fit {arch}{stem}{options}")
    encoder, _ = build_backbone(
        arch, cifar_stem=cifar_stem, padding=padding, stem_padding=stem_padding, **vit_options
    )
    encoder.load_state_dict(state_dict, strict=True)
    return encoder
