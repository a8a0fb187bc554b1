"""The PyTorch SSL libraries' checkpoint layouts -> torchvision ResNet / timm ViT state dicts.

Each layout is matched by exact key prefixes (`str.startswith`, never a substring replace: a
replace of "backbone." would also rewrite solo-learn's "momentum_backbone."). Each `*_problems`
function returns what a file lacks to be that layout (empty: it is one); each `extract_*`
returns (state dict in torchvision names, metadata) for network "online" or "target". Sources:
- MoCo v1/v2 (facebookresearch/moco main_moco.py): {state_dict: {module.encoder_q.*,
  module.encoder_k.*, module.queue, module.queue_ptr}}; encoder_q.fc is v1's linear / v2's MLP head.
- MoCo v3 (facebookresearch/moco-v3 moco/builder.py): module.base_encoder.* (fc = projector),
  module.momentum_encoder.*, module.predictor.*.
- DINO (facebookresearch/dino main_dino.py): {student: {module.backbone.*, module.head.*},
  teacher: {backbone.*, head.*}, optimizer, epoch, args: argparse.Namespace, dino_loss}.
- SwAV / DeepCluster-v2 (facebookresearch/swav): {state_dict: {module.*}} or bare module.*,
  with module.projection_head.* and module.prototypes.*.
- solo-learn (Lightning .ckpt): state_dict {backbone.*, momentum_backbone.*, projector.*,
  predictor.*, classifier.*}; CIFAR runs: 3x3 stride-1 stem padded by 2, no max-pool.
- lightly (Lightning .ckpt; its imagenet/resnet50/byol.py and dino.py benchmarks): backbone.*
  (BYOL: online, teacher_backbone.* the EMA; older: backbone_momentum.*; DINO: backbone.* is the
  teacher, student_backbone.* the student); backbone may be nn.Sequential(*children()[:-1]).
- mmselfsup / mmpretrain: {state_dict: {backbone.*, neck.*, head.*}, meta: {...}}.
- VISSL: classy_state_dict.base_model.model.trunk: {_feature_blocks.*}.
- torchvision / timm / DINO's plain dino_resnet50_pretrain.pth: torchvision names, fc dropped.
- timm / DINO ViTs (DINO's dino_deitsmall16_pretrain.pth, vision_transformer.py names: cls_token,
  pos_embed, patch_embed.proj.*, blocks.N.*, norm.*), bare or under state_dict/model, timm's
  head.* dropped; DINO's training checkpoint of a ViT is the DINO layout above. ViTs keep their
  names (pretrain/vit.py is timm's ViT).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from evaluate.importers.errors import ForeignCheckpointError

LIGHTNING_KEYS = ("state_dict", "pytorch-lightning_version")
# nn.Sequential(*list(resnet.children())[:-1]): index -> torchvision child (relu, maxpool,
# avgpool hold no weights).
SEQUENTIAL_RESNET = {
    "0": "conv1",
    "1": "bn1",
    "4": "layer1",
    "5": "layer2",
    "6": "layer3",
    "7": "layer4",
}


def is_tensor_dict(blob) -> bool:
    return (
        isinstance(blob, Mapping)
        and bool(blob)
        and all(
            isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in blob.items()
        )
    )


def with_prefix(state: Mapping, prefix: str, drop: tuple[str, ...] = ()) -> dict:
    """Keys that start with `prefix`, prefix removed; then keys starting with a `drop` entry go."""
    out = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
    return {key: value for key, value in out.items() if not key.startswith(drop)}


def has_prefix(state, prefix: str) -> bool:
    return isinstance(state, Mapping) and any(str(key).startswith(prefix) for key in state)


def unwrap(blob, *wrappers: str):
    """blob[w] for the first wrapper w that holds a dict, else blob."""
    for wrapper in wrappers:
        if isinstance(blob, Mapping) and isinstance(blob.get(wrapper), Mapping):
            return blob[wrapper]
    return blob


def is_vit_state(state) -> bool:
    """A ViT's parameters (timm's / DINO's names: pos_embed, patch_embed.proj.weight)."""
    return isinstance(state, Mapping) and {"pos_embed", "patch_embed.proj.weight"} <= set(state)


def vit_found(state: dict) -> dict:
    """What a ViT state dict says about itself: its patch size, the [CLS] token and the final
    norm present or not (SelfPatch's ViT has neither), and DINO's evaluation preprocessing
    (eval_linear.py and eval_knn.py: Resize(256, interpolation=3), i.e. bicubic with PIL's
    antialiasing, CenterCrop(224), ImageNet mean/std)."""
    return {
        "patch_size": int(state["patch_embed.proj.weight"].shape[-1]),
        "cls_token": "cls_token" in state,
        "final_norm": "norm.weight" in state,
        "preprocessing": {
            "image_size": 224,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "resize_interpolation": "bicubic",
            "antialias": True,
        },
    }


def _problems_prefixes(state, wanted: tuple[str, ...], where: str) -> list[str]:
    if not isinstance(state, Mapping):
        return [f"a dict '{where}'"]
    return [f"'{where}' keys {prefix}*" for prefix in wanted if not has_prefix(state, prefix)]


def _choose(network: str, online: str, target: str | None, what: str) -> str:
    if network == "online":
        return online
    if target is None:
        raise ForeignCheckpointError(
            f"{what} holds no target (momentum/teacher) network; use --network online"
        )
    return target


# ---------------------------------------------------------------------------------------------
# MoCo v1/v2, MoCo v3


def moco_problems(blob) -> list[str]:
    state = unwrap(blob, "state_dict")
    return _problems_prefixes(state, ("module.encoder_q.",), "state_dict")


def extract_moco(blob, network: str) -> tuple[dict, dict]:
    state = blob["state_dict"] if isinstance(blob.get("state_dict"), Mapping) else blob
    target = "module.encoder_k." if has_prefix(state, "module.encoder_k.") else None
    prefix = _choose(network, "module.encoder_q.", target, "this MoCo file")
    v2 = has_prefix(state, "module.encoder_q.fc.0.")
    return with_prefix(state, prefix, drop=("fc.",)), {
        "method": "moco-v2" if v2 else "moco-v1",
        "pretrain_epochs": blob.get("epoch"),
    }


def moco_v3_problems(blob) -> list[str]:
    state = unwrap(blob, "state_dict")
    return _problems_prefixes(state, ("module.base_encoder.",), "state_dict")


def extract_moco_v3(blob, network: str) -> tuple[dict, dict]:
    state = unwrap(blob, "state_dict")
    momentum = "module.momentum_encoder."
    target = momentum if has_prefix(state, momentum) else None
    prefix = _choose(network, "module.base_encoder.", target, "this MoCo v3 file")
    return with_prefix(state, prefix, drop=("fc.", "head.")), {
        "method": "moco-v3",
        "pretrain_epochs": blob.get("epoch"),
    }


# ---------------------------------------------------------------------------------------------
# DINO (full training checkpoint; the plain ResNet-50 release is the torchvision layout)


def dino_problems(blob) -> list[str]:
    if not isinstance(blob, Mapping):
        return ["a dict with 'student' and 'teacher'"]
    return _problems_prefixes(
        blob.get("student"), ("module.backbone.",), "student"
    ) + _problems_prefixes(blob.get("teacher"), ("backbone.",), "teacher")


def extract_dino(blob, network: str) -> tuple[dict, dict]:
    if network == "online":
        state = with_prefix(blob["student"], "module.backbone.", drop=("fc.", "head."))
    else:
        state = with_prefix(blob["teacher"], "backbone.", drop=("fc.", "head."))
    found = vit_found(state) if is_vit_state(state) else {}
    return state, {"method": "dino", "pretrain_epochs": blob.get("epoch"), **found}


# ---------------------------------------------------------------------------------------------
# SwAV / DeepCluster-v2 (and any DistributedDataParallel-saved torchvision ResNet)


def swav_problems(blob) -> list[str]:
    state = unwrap(blob, "state_dict")
    if not isinstance(state, Mapping) or not state:
        return ["a state dict (bare or under 'state_dict')"]
    if not all(str(key).startswith("module.") for key in state):
        return ["every key starting with module."]
    return [] if "module.conv1.weight" in state else ["the key module.conv1.weight"]


def extract_swav(blob, network: str) -> tuple[dict, dict]:
    _choose(network, "online", None, "a SwAV/DeepCluster file")
    state = unwrap(blob, "state_dict")
    drop = ("projection_head.", "prototypes.", "fc.")
    method = "swav" if has_prefix(state, "module.prototypes.") else None
    return with_prefix(state, "module.", drop=drop), {
        "method": method,
        "pretrain_epochs": blob.get("epoch"),
    }


# ---------------------------------------------------------------------------------------------
# Lightning: solo-learn and lightly


def _lightning_state(blob):
    if not isinstance(blob, Mapping) or not all(key in blob for key in LIGHTNING_KEYS):
        return None
    return blob["state_dict"]


def solo_learn_problems(blob) -> list[str]:
    state = _lightning_state(blob)
    if state is None:
        return ["a Lightning checkpoint (state_dict, pytorch-lightning_version)"]
    problems = _problems_prefixes(state, ("backbone.",), "state_dict")
    if not any(has_prefix(state, p) for p in ("momentum_backbone.", "projector.", "classifier.")):
        problems.append("solo-learn's heads (momentum_backbone.*, projector.* or classifier.*)")
    return problems


def extract_solo_learn(blob, network: str) -> tuple[dict, dict]:
    state = blob["state_dict"]
    target = "momentum_backbone." if has_prefix(state, "momentum_backbone.") else None
    prefix = _choose(network, "backbone.", target, "this solo-learn checkpoint")
    backbone = with_prefix(state, prefix, drop=("fc.",))
    conv1 = backbone.get("conv1.weight")
    cifar = conv1 is not None and tuple(conv1.shape[-2:]) == (3, 3)
    metadata = {"method": _hparam(blob, "method"), "pretrain_epochs": blob.get("epoch")}
    if cifar:  # solo-learn's CIFAR stem: nn.Conv2d(3, 64, 3, stride=1, padding=2), no max-pool
        metadata["stem_padding"] = 2
    return backbone, metadata


def _hparam(blob, name: str):
    hparams = blob.get("hyper_parameters")
    value = hparams.get(name) if isinstance(hparams, Mapping) else getattr(hparams, name, None)
    if value is None and hparams is not None:  # solo-learn's argparse era: hparams {"args": ...}
        nested = hparams.get("args") if isinstance(hparams, Mapping) else None
        value = getattr(nested, name, None)
    return value if isinstance(value, str) else None


LIGHTLY_TARGETS = ("teacher_backbone.", "backbone_momentum.")


def lightly_problems(blob) -> list[str]:
    state = _lightning_state(blob)
    if state is None:
        return ["a Lightning checkpoint (state_dict, pytorch-lightning_version)"]
    return _problems_prefixes(state, ("backbone.",), "state_dict")


def extract_lightly(blob, network: str) -> tuple[dict, dict]:
    state = blob["state_dict"]
    if has_prefix(state, "student_backbone."):  # lightly's DINO: backbone is the teacher
        prefix = "student_backbone." if network == "online" else "backbone."
    else:
        target = next((p for p in LIGHTLY_TARGETS if has_prefix(state, p)), None)
        prefix = _choose(network, "backbone.", target, "this lightly checkpoint")
    backbone = with_prefix(state, prefix, drop=("fc.",))
    if "0.weight" in backbone:  # nn.Sequential(*list(resnet.children())[:-1])
        backbone = {_sequential_name(key): value for key, value in backbone.items()}
    return backbone, {"method": None, "pretrain_epochs": blob.get("epoch")}


def _sequential_name(key: str) -> str:
    index, _, rest = key.partition(".")
    return f"{SEQUENTIAL_RESNET.get(index, 'unknown_child_' + index)}.{rest}"


# ---------------------------------------------------------------------------------------------
# mmselfsup / mmpretrain, VISSL, torchvision


def mmselfsup_problems(blob) -> list[str]:
    if not isinstance(blob, Mapping) or "meta" not in blob:
        return ["a dict with 'state_dict' and 'meta'"]
    return _problems_prefixes(blob.get("state_dict"), ("backbone.",), "state_dict")


def extract_mmselfsup(blob, network: str) -> tuple[dict, dict]:
    _choose(network, "online", None, "an mmselfsup/mmpretrain file")
    meta = blob.get("meta") if isinstance(blob.get("meta"), Mapping) else {}
    return with_prefix(blob["state_dict"], "backbone.", drop=("fc.",)), {
        "method": None,
        "pretrain_epochs": meta.get("epoch"),
    }


VISSL_PATH = ("classy_state_dict", "base_model", "model", "trunk")


def _vissl_trunk(blob):
    node = blob
    for key in VISSL_PATH:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def vissl_problems(blob) -> list[str]:
    trunk = _vissl_trunk(blob)
    if trunk is None:
        return ["the nested dict " + " -> ".join(VISSL_PATH)]
    return _problems_prefixes(trunk, ("_feature_blocks.",), "trunk")


def extract_vissl(blob, network: str) -> tuple[dict, dict]:
    _choose(network, "online", None, "a VISSL file")
    return with_prefix(_vissl_trunk(blob), "_feature_blocks.", drop=("fc.",)), {
        "method": None,
        "pretrain_epochs": blob.get("phase_idx"),
    }


def vit_problems(blob) -> list[str]:
    state = unwrap(blob, "state_dict", "model")
    if not is_tensor_dict(state):
        return ["a dict of tensors (bare, or under 'state_dict' or 'model')"]
    return [] if is_vit_state(state) else ["the keys pos_embed and patch_embed.proj.weight"]


def extract_vit(blob, network: str) -> tuple[dict, dict]:
    """A timm / DINO ViT state dict (DINO's dino_deitsmall16_pretrain.pth: the teacher backbone,
    bare); timm's classifier head.* dropped."""
    _choose(network, "online", None, "a timm/DINO ViT state dict")
    state = unwrap(blob, "state_dict", "model")
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    return state, {"method": None, **vit_found(state)}


def torchvision_problems(blob) -> list[str]:
    state = unwrap(blob, "state_dict", "model")
    if not is_tensor_dict(state):
        return ["a dict of tensors (bare, or under 'state_dict' or 'model')"]
    return [] if "conv1.weight" in state else ["the key conv1.weight"]


def extract_torchvision(blob, network: str) -> tuple[dict, dict]:
    _choose(network, "online", None, "a torchvision/timm state dict")
    state = unwrap(blob, "state_dict", "model")
    return {k: v for k, v in state.items() if not k.startswith("fc.")}, {"method": None}
