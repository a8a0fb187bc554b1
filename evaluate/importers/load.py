"""load_foreign: any supported foreign checkpoint -> (torchvision-named state dict, metadata).

The one entry point of the importers (used by `python -m evaluate.convert`, and by every
evaluation's `--ckpt` once hooked up): read the file safely (safe_load.py), detect or check its
format (formats.py), take the online or target network, then check the result against the
backbone registry (pretrain/backbones.py) so that a wrong architecture or missing keys are
refused here, naming them, before anything is built.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import torch

from evaluate.importers import safe_load
from evaluate.importers.errors import ForeignCheckpointError
from evaluate.importers.formats import BY_NAME, FORMATS, Format, check_format, detect
from pretrain.augment import IMAGENET_MEAN, IMAGENET_STD
from pretrain.backbones import BACKBONES, build_backbone, is_vit

NETWORKS = ("auto", "online", "target")
_SHOW = 10  # keys listed per kind in a mismatch message


def load_foreign(
    path: str | Path, *, format: str = "auto", network: str = "auto", arch: str | None = None
) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict in torchvision key names, metadata) of a foreign checkpoint file.

    format: "auto" (detected) or a name of formats.FORMATS. network: "online", "target"
    (momentum / EMA / teacher), or "auto" = the one the library's authors evaluate (online for
    BYOL and MoCo, the teacher for DINO). arch: a registry name to check against, else inferred
    from the shapes. metadata: method, label, source ("imported:<format>"), source_format,
    source_sha256, source_path, network, arch, cifar_stem, stem_padding (None or solo-learn's
    2), padding ("torchvision" | "tf-same"), preprocessing {image_size, mean, std,
    resize_interpolation, antialias}, pretrain_epochs.
    """
    path = Path(path)
    if not path.is_file():
        raise ForeignCheckpointError(f"checkpoint {path} does not exist")
    if format != "auto" and format not in BY_NAME:
        raise ForeignCheckpointError(
            f"unknown format {format!r}; use auto or one of {', '.join(BY_NAME)}"
        )
    if network not in NETWORKS:
        raise ForeignCheckpointError(f"unknown network {network!r}; use one of {NETWORKS}")
    container, blob = _read(path)
    fmt = detect(blob, container, path) if format == "auto" else BY_NAME[format]
    if format != "auto":
        check_format(blob, container, fmt, path)
    chosen = fmt.default_network if network == "auto" else network
    try:
        state_dict, found = fmt.extract(blob, chosen)
    except (KeyError, AttributeError, TypeError, ValueError) as error:
        if isinstance(error, ForeignCheckpointError):
            raise
        raise ForeignCheckpointError(
            f"{path} has the layout of {fmt.name} but unexpected content ({type(error).__name__}: "
            f"{str(error)[:200]}); expected {fmt.looks_like}"
        ) from error
    state_dict = _with_bn_counters(state_dict)
    stem_padding = found.pop("stem_padding", None)
    options = {key: found[key] for key in ("cls_token", "final_norm") if key in found}
    arch_name, cifar_stem = _check_arch(state_dict, arch, path, fmt, options)
    metadata = _metadata(path, fmt, chosen, found, arch_name, cifar_stem, stem_padding)
    return state_dict, metadata


def _read(path: Path):
    kind = safe_load.sniff(path)
    if kind == "torch":
        return "torch", safe_load.load_torch_file(path)
    if kind == "pickle":
        return "pickle", safe_load.load_restricted_pickle(path)
    raise ForeignCheckpointError(
        f"{path} cannot be read: it is neither a torch file nor a pickle; the importers read: "
        + "; ".join(f"{fmt.name} = {fmt.looks_like}" for fmt in FORMATS)
    )


def _with_bn_counters(state_dict: dict) -> dict:
    """Files saved before PyTorch 0.4 (and Haiku's) lack BN step counters: fill them with 0."""
    state_dict = dict(state_dict)
    for key in [k for k in state_dict if k.endswith(".running_mean")]:
        counter = key[: -len("running_mean")] + "num_batches_tracked"
        state_dict.setdefault(counter, torch.tensor(0, dtype=torch.long))
    return state_dict


@functools.cache
def _registry_shapes(arch: str, cifar_stem: bool, **vit_options) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the registry's `arch`; a ViT with `vit_options` ([CLS], final norm)."""
    options = vit_options if is_vit(arch) else {}
    with torch.device("meta"):  # a ViT has no CIFAR stem
        model, _ = build_backbone(arch, cifar_stem=cifar_stem and not is_vit(arch), **options)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def _check_arch(
    state_dict: dict, arch: str | None, path: Path, fmt: Format, vit_options: dict
) -> tuple[str, bool]:
    """(arch, cifar_stem) whose registry keys and shapes equal the state dict's, else refused;
    a ViT is compared with the [CLS]/final-norm options its keys show (`vit_options`)."""
    shapes = {key: tuple(value.shape) for key, value in state_dict.items()}
    conv1 = shapes.get("conv1.weight")
    cifar_stem = conv1 is not None and conv1[-1] == 3
    candidates = [arch] if arch else list(BACKBONES)
    for name in candidates:
        if name not in BACKBONES:
            raise ForeignCheckpointError(
                f"unknown architecture {name!r}; use one of {', '.join(BACKBONES)}"
            )
        if _registry_shapes(name, cifar_stem, **vit_options) == shapes:
            return name, cifar_stem
    closest = arch or _closest(shapes, cifar_stem, vit_options)
    expected = _registry_shapes(closest, cifar_stem, **vit_options)
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    reshaped = sorted(k for k in set(shapes) & set(expected) if shapes[k] != expected[k])
    target = arch or f"any registry architecture ({', '.join(BACKBONES)})"
    advice = "pass the right --arch" if arch else "cannot infer the architecture: pass --arch"
    raise ForeignCheckpointError(
        f"{path} ({fmt.name}) does not fit {target}: {len(missing)} missing keys "
        f"{missing[:_SHOW]}, {len(unexpected)} unexpected keys {unexpected[:_SHOW]}, "
        f"{len(reshaped)} keys with other shapes {reshaped[:_SHOW]}; {advice} (e.g. resnet50, "
        "resnet18:cifar, vit_small_patch16) if the file holds one of them"
    )


def _closest(shapes: dict, cifar_stem: bool, vit_options: dict) -> str:
    """The registry entry sharing the most (key, shape) pairs, to name the differences."""
    return max(
        BACKBONES,
        key=lambda name: len(
            set(_registry_shapes(name, cifar_stem, **vit_options).items()) & set(shapes.items())
        ),
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _metadata(path, fmt, network, found, arch, cifar_stem, stem_padding) -> dict:
    preprocessing = found.pop("preprocessing", None) or {
        # torchvision's reference evaluation, used by MoCo, DINO, SwAV, solo-learn, lightly:
        # Resize(256) bilinear with antialiasing (PIL), CenterCrop(224), ImageNet mean/std.
        "image_size": 224,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "resize_interpolation": "bilinear",
        "antialias": True,
    }
    if cifar_stem:  # 32 px inputs, no resize; CIFAR-10 statistics as solo-learn's CIFAR runs
        preprocessing = {
            "image_size": 32,
            "mean": [0.4914, 0.4822, 0.4465],
            "std": [0.2470, 0.2435, 0.2616],
            "resize_interpolation": None,
            "antialias": None,
        }
    method = found.pop("method", None)
    metadata = {
        "method": method,
        "label": found.pop("label", None) or f"{method or fmt.name} ({path.stem})",
        "source": f"imported:{fmt.name}",
        "source_format": fmt.name,
        "source_sha256": file_sha256(path),
        "source_path": str(path.resolve()),
        "network": network,
        "arch": arch,
        "cifar_stem": cifar_stem,
        "stem_padding": stem_padding,
        "padding": found.pop("padding", "torchvision"),
        "preprocessing": preprocessing,
        "pretrain_epochs": found.pop("pretrain_epochs", None),
    }
    metadata.update(found)
    return metadata
