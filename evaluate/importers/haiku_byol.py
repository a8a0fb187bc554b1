"""The authors' BYOL release (JAX/Haiku pickle) -> a torchvision-named ResNet state dict.

The file (`pretrain_res50x1.pkl`, `pretrain_res200x2.pkl`; deepmind-research byol/utils/
checkpointing.py: `dill.dump(dict(experiment_state=..., step=..., rng=...), protocol=2)`) holds
`experiment_state = _ByolExperimentState(online_params, target_params, online_state,
target_state, opt_state)` (byol/byol_experiment.py); params and state are two-level Haiku maps
`module path -> {name: array}`. The encoder is byol/utils/networks.py's ResNetTorso, named
`res_net50` / `res_net200` and built from haiku.nets.ResNet's BlockV1 (haiku/_src/nets/resnet.py):

    res_net50/~/initial_conv               {w: HWIO}                  -> conv1.weight (OIHW)
    res_net50/~/initial_batchnorm          {scale, offset: 1x1x1xC}   -> bn1.weight, bn1.bias
    .../initial_batchnorm/~/mean_ema       {average, counter, hidden} -> bn1.running_mean
    .../initial_batchnorm/~/var_ema        {average, ...}             -> bn1.running_var
    res_net50/~/block_group_g/~/block_b/~/conv_i        -> layer{g+1}.{b}.conv{i+1}
    res_net50/~/block_group_g/~/block_b/~/batchnorm_i   -> layer{g+1}.{b}.bn{i+1}
    .../shortcut_conv, .../shortcut_batchnorm           -> .downsample.0, .downsample.1

`average` is the zero-debiased EMA Haiku's BatchNorm uses at test time; the counter of the mean
EMA becomes `num_batches_tracked`. `projector/`, `predictor/`, `classifier/` and a `logits`
layer are dropped. Haiku pads every conv and the max-pool "SAME": the encoder must be built with
`padding="tf-same"` (pretrain/backbones.py) to give the authors' features.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from evaluate.importers.errors import ForeignCheckpointError

EXPERIMENT_FIELDS = ("online_params", "target_params", "online_state", "target_state")
DROPPED_MODULES = ("projector", "predictor", "classifier")
_TOP = re.compile(r"res_net\d+")
_BLOCK = re.compile(r"block_group_(\d+)/~/block_(\d+)/~/(conv|batchnorm)_(\d+)")
_SHORTCUT = re.compile(r"block_group_(\d+)/~/block_(\d+)/~/shortcut_(conv|batchnorm)")


def missing_fields(blob) -> list[str]:
    """The released file's fields that `blob` lacks (for the error message)."""
    if not isinstance(blob, dict) or "experiment_state" not in blob:
        return ["experiment_state"]
    state = blob["experiment_state"]
    return [f"experiment_state.{field}" for field in EXPERIMENT_FIELDS if not hasattr(state, field)]


def _torch_name(module: str) -> str | None:
    """Haiku module path (below `res_net*/~/`) -> torchvision module name; None if not mapped."""
    if module == "initial_conv":
        return "conv1"
    if module == "initial_batchnorm":
        return "bn1"
    if match := _BLOCK.fullmatch(module):
        group, block, kind, index = match.groups()
        layer = f"layer{int(group) + 1}.{int(block)}"
        return f"{layer}.{'conv' if kind == 'conv' else 'bn'}{int(index) + 1}"
    if match := _SHORTCUT.fullmatch(module):
        group, block, kind = match.groups()
        return f"layer{int(group) + 1}.{int(block)}.downsample.{0 if kind == 'conv' else 1}"
    return None


def _split(path: str, what: str) -> tuple[str, str] | None:
    """`res_net50/~/rest` -> ("res_net50", "rest"); None for the dropped heads."""
    top, _, rest = path.partition("/~/")
    if top in DROPPED_MODULES:
        return None
    if not _TOP.fullmatch(top) or not rest:
        raise ForeignCheckpointError(
            f"the BYOL release's {what} has a module {path!r} that is neither the ResNet "
            f"(res_net<depth>/~/...) nor one of the heads {', '.join(DROPPED_MODULES)}"
        )
    return top, rest


def _tensor(array) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=np.float32, copy=True))


def haiku_to_torchvision(params: dict, state: dict) -> dict[str, torch.Tensor]:
    """One network's Haiku params and BN state -> torchvision key names (module docstring)."""
    out: dict[str, torch.Tensor] = {}
    for path, leaves in params.items():
        if (split := _split(path, "params")) is None or split[1] == "logits":
            continue
        name = _torch_name(split[1])
        if name is None:
            raise ForeignCheckpointError(f"the BYOL release has an unknown ResNet module {path!r}")
        for leaf, value in leaves.items():
            if leaf == "w":  # conv kernel HWIO -> OIHW
                out[f"{name}.weight"] = _tensor(value).permute(3, 2, 0, 1).contiguous()
            elif leaf in ("scale", "offset"):  # BN [1, 1, 1, C] -> [C]
                out[f"{name}.{'weight' if leaf == 'scale' else 'bias'}"] = _tensor(value).flatten()
            else:
                raise ForeignCheckpointError(f"the BYOL release has an unknown param {path}/{leaf}")
    for path, leaves in state.items():
        if (split := _split(path, "state")) is None:
            continue
        module, _, ema = split[1].rpartition("/~/")
        name = _torch_name(module)
        if name is None or ema not in ("mean_ema", "var_ema"):
            raise ForeignCheckpointError(f"the BYOL release has an unknown state entry {path!r}")
        stat = "running_mean" if ema == "mean_ema" else "running_var"
        out[f"{name}.{stat}"] = _tensor(leaves["average"]).flatten()
        if ema == "mean_ema":
            counter = int(np.asarray(leaves.get("counter", 0)).reshape(-1)[0])
            out[f"{name}.num_batches_tracked"] = torch.tensor(counter, dtype=torch.long)
    return out


def extract_byol_release(blob, network: str) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, metadata) of the online (default) or target encoder of the release."""
    state = blob["experiment_state"]
    params, bn_state = getattr(state, f"{network}_params"), getattr(state, f"{network}_state")
    state_dict = haiku_to_torchvision(params, bn_state)
    tops = {path.partition("/~/")[0] for path in params} - set(DROPPED_MODULES)
    step = blob.get("step")
    metadata = {
        "method": "byol",
        "label": "BYOL (authors' release)",
        "padding": "tf-same",
        "haiku_module": ",".join(sorted(tops)),
        "pretrain_steps": int(step) if step is not None else None,
        # BYOL's eval pipeline (byol/utils/dataset.py, _preprocess_image): centre crop of 224/256
        # of the shorter side, tf.image.resize to 224 bicubic without antialiasing, clipped to
        # [0, 1]; ImageNet mean/std (normalize_images).
        "preprocessing": {
            "image_size": 224,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "resize_interpolation": "bicubic",
            "antialias": False,
        },
    }
    return state_dict, metadata
