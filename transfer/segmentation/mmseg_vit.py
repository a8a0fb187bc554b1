"""Our ViT weights under mmseg's `VisionTransformer` names, and the config values of its backbone.

The key mapping is mmseg's tools/model_converters/vit2mmseg.py (the converter SelfPatch's
segmentation/README.md runs on its checkpoints), from timm/DINO names (pretrain/vit.py):
    patch_embed.proj.*    -> patch_embed.projection.*
    blocks.N.norm1/2.*    -> layers.N.ln1/2.*
    blocks.N.attn.qkv.*   -> layers.N.attn.attn.in_proj_weight / in_proj_bias
    blocks.N.attn.proj.*  -> layers.N.attn.attn.out_proj.*
    blocks.N.mlp.fc1.*    -> layers.N.ffn.layers.0.0.*
    blocks.N.mlp.fc2.*    -> layers.N.ffn.layers.1.*
    cls_token, pos_embed  -> the same names
The final norm (`norm.*`, vit2mmseg's `ln1.*`) is not written: the configs set final_norm=False
(SelfPatch_ViT has none, and the head takes raw block outputs). mmseg's ViT always holds a
[CLS] token and a pos_embed with its entry ([1, 1 + N, D]); with_cls_token=False drops the token
after the position embedding, before the blocks, as SelfPatch_ViT (which has none) computes.
For weights without [CLS] (SelfPatch's ViT), `cls_token` and pos_embed's [CLS] entry are written
as zeros: they never reach a block. mmseg's init_weights then resizes pos_embed's patch entries
to the config's img_size grid and its forward to each input's grid, bicubically with `size=`,
which transfer/segmentation/vit_models.py reproduces for the built-in engine.
"""

from __future__ import annotations

import re

import torch

from pretrain.checkpoint import CheckpointError
from transfer.segmentation.protocols import SegmentationProtocol

RENAMES = (  # (pattern, replacement) on blocks.N.<rest>, first match wins
    (r"^blocks\.(\d+)\.norm(\d)\.", r"layers.\1.ln\2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", r"layers.\1.attn.attn.in_proj_\2"),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"layers.\1.attn.attn.out_proj."),
    (r"^blocks\.(\d+)\.mlp\.fc1\.", r"layers.\1.ffn.layers.0.0."),
    (r"^blocks\.(\d+)\.mlp\.fc2\.", r"layers.\1.ffn.layers.1."),
    (r"^patch_embed\.proj\.", "patch_embed.projection."),
)
FINAL_NORM = ("norm.weight", "norm.bias")


def mmseg_vit_key(key: str) -> str:
    """The mmseg VisionTransformer name of one of our ViT's keys (not the final norm's)."""
    for pattern, replacement in RENAMES:
        renamed, count = re.subn(pattern, replacement, key)
        if count:
            return renamed
    if key in ("cls_token", "pos_embed"):
        return key
    raise KeyError(f"{key} has no mmseg VisionTransformer counterpart")


def mmseg_vit_state_dict(
    state_dict: dict[str, torch.Tensor], depth: int
) -> dict[str, torch.Tensor]:
    """The ViT's tensors under mmseg names (final norm left out; a zero [CLS] token and pos_embed
    entry where the ViT has none), checked complete: 4 + 12 x depth tensors."""
    state = {k: v.detach().cpu().clone().contiguous() for k, v in state_dict.items()}
    for key in FINAL_NORM:
        state.pop(key, None)
    if "cls_token" not in state:  # SelfPatch's ViT: slots mmseg's ViT has and then drops
        pos_embed = state["pos_embed"]  # [1, N, D]
        state["cls_token"] = torch.zeros(1, 1, pos_embed.shape[-1], dtype=pos_embed.dtype)
        state["pos_embed"] = torch.cat((torch.zeros_like(pos_embed[:, :1]), pos_embed), dim=1)
    converted = {mmseg_vit_key(key): value for key, value in state.items()}
    expected = set(mmseg_vit_keys(depth))
    if set(converted) != expected:
        raise CheckpointError(
            f"the ViT's weights do not make mmseg's {depth}-block VisionTransformer: missing "
            f"{sorted(expected - set(converted))[:10]}, unexpected "
            f"{sorted(set(converted) - expected)[:10]}"
        )
    return converted


def mmseg_vit_keys(depth: int) -> list[str]:
    """mmseg VisionTransformer's parameter names (final_norm False, no patch norm)."""
    per_block = ["ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias"]
    per_block += ["attn.attn.in_proj_weight", "attn.attn.in_proj_bias"]
    per_block += ["attn.attn.out_proj.weight", "attn.attn.out_proj.bias"]
    per_block += [f"ffn.layers.{i}.{p}" for i in ("0.0", "1") for p in ("weight", "bias")]
    keys = ["cls_token", "pos_embed", "patch_embed.projection.weight"]
    keys += ["patch_embed.projection.bias"]
    return keys + [f"layers.{n}.{name}" for n in range(depth) for name in per_block]


def vit_config_values(encoder, settings: SegmentationProtocol) -> dict:
    """The BYOL-BENCH values of the ViT templates' backbone (SelfPatch's semfpn config)."""
    return {
        "patch_size": encoder.patch_size,
        "embed_dims": encoder.embed_dim,
        "num_layers": len(encoder.blocks),
        "num_heads": encoder.blocks[0].attn.num_heads,
        "out_indices": list(settings.blocks),
        "drop_path_rate": settings.drop_path,
        "img_size": settings.crop
        - settings.crop % encoder.patch_size,  # pos_embed's grid (512: 32x32 at 16)
        "warmup_iters": settings.warmup_iters,
    }
