"""Writers of other libraries' files for the importer tests: dill-style pickles, Lightning hparams.

dill and Lightning are not dependencies: the globals their files name (`dill._dill.
_create_namedtuple`, `...AttributeDict`) are provided by stand-in modules that exist only while a
file is written, so the bytes are what those libraries write.
"""

from __future__ import annotations

import contextlib
import pickle
import sys
import types

import torch
import torchvision
from torch import nn


@contextlib.contextmanager
def stand_in_module(dotted: str, **names):
    """`dotted` (and its parents) importable with `names` while the block runs."""
    parts = dotted.split(".")
    saved = {}
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        saved[name] = sys.modules.get(name)
        sys.modules[name] = types.ModuleType(name)
    for attr, value in names.items():
        value.__module__ = dotted
        value.__qualname__ = attr
        setattr(sys.modules[dotted], attr, value)
    try:
        yield sys.modules[dotted]
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _create_namedtuple(name, fieldnames, modulename, defaults=None):
    raise AssertionError("the stand-in is never called while writing")


class DillStylePickler(pickle.Pickler):
    """Protocol 2, namedtuple classes by value as dill does: `_create_namedtuple(name, fields,
    module)` (dill/_dill.py, save_type)."""

    def __init__(self, handle):
        super().__init__(handle, protocol=2)

    def reducer_override(self, obj):
        if isinstance(obj, type) and issubclass(obj, tuple) and hasattr(obj, "_fields"):
            return _create_namedtuple, (obj.__qualname__, obj._fields, obj.__module__)
        return NotImplemented


def dump_dill_style(path, blob) -> None:
    """`dill.dump(blob, handle, protocol=2)` as byol/utils/checkpointing.py writes it."""
    with stand_in_module("dill._dill", _create_namedtuple=_create_namedtuple):
        with open(path, "wb") as handle:
            DillStylePickler(handle).dump(blob)


class AttributeDict(dict):
    """Lightning's AttributeDict: a dict with attribute access (pickled by reference)."""


def save_with_attribute_dict(path, blob_factory, module="pytorch_lightning.utilities.parsing"):
    """torch.save(blob_factory(AttributeDict)) with AttributeDict importable from `module`."""
    with stand_in_module(module, AttributeDict=AttributeDict):
        torch.save(blob_factory(AttributeDict), path)


def reference_resnet(name: str = "resnet18", seed: int = 0, cifar_padding: int | None = None):
    """A torchvision ResNet in eval mode with random weights, BN affine and BN statistics; with
    `cifar_padding`, solo-learn's CIFAR stem (3x3 stride-1 conv padded so, no max-pool)."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None)
    if cifar_padding is not None:
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=cifar_padding, bias=False)
        model.maxpool = nn.Identity()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.1)
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.num_batches_tracked.fill_(1000)
    return model.eval()


def trunk_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """torchvision names without the classifier."""
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}


def features_without_fc(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    fc, model.fc = model.fc, nn.Identity()
    try:
        with torch.no_grad():
            return model(images)
    finally:
        model.fc = fc


def prefixed(state: dict, prefix: str) -> dict:
    return {prefix + key: value for key, value in state.items()}


def mlp_state(prefix: str, sizes: list[int], batchnorm: bool = True) -> dict[str, torch.Tensor]:
    """Linear(-BN) layers as nn.Sequential indices: prefix.0.weight, prefix.1.running_mean, ..."""
    state, index = {}, 0
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        state[f"{prefix}{index}.weight"] = torch.randn(fan_out, fan_in)
        state[f"{prefix}{index}.bias"] = torch.randn(fan_out)
        index += 1
        if batchnorm:
            for buffer, value in (
                ("weight", torch.ones(fan_out)),
                ("bias", torch.zeros(fan_out)),
                ("running_mean", torch.zeros(fan_out)),
                ("running_var", torch.ones(fan_out)),
                ("num_batches_tracked", torch.tensor(7)),
            ):
                state[f"{prefix}{index}.{buffer}"] = value
            index += 2  # BN, ReLU
    return state


def write_moco(directory, online: nn.Module, key_encoder: nn.Module, version: int = 1):
    """A MoCo checkpoint as facebookresearch/moco main_moco.py saves it (DataParallel prefix,
    query + key encoders, the queue) in `directory`: v1 with its 128-d linear fc (200 epochs), v2
    with its MLP head (`--mlp`, 800 epochs); returns its path."""
    if version == 1:
        head = {"fc.weight": torch.randn(128, 512), "fc.bias": torch.randn(128)}
    else:
        head = {
            "fc.0.weight": torch.randn(512, 512),
            "fc.0.bias": torch.randn(512),
            "fc.2.weight": torch.randn(128, 512),
            "fc.2.bias": torch.randn(128),
        }
    state = {
        **prefixed(trunk_state(online), "module.encoder_q."),
        **prefixed(head, "module.encoder_q."),
        **prefixed(trunk_state(key_encoder), "module.encoder_k."),
        "module.queue": torch.randn(128, 4096 if version == 1 else 256),
        "module.queue_ptr": torch.zeros(1, dtype=torch.long),
    }
    epochs = 200 if version == 1 else 800
    path = directory / f"moco_v{version}_{epochs}ep_pretrain.pth.tar"
    torch.save({"epoch": epochs, "arch": "resnet18", "state_dict": state}, path)
    return path
