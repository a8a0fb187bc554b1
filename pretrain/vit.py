"""Vision Transformers for DINO, SelfPatch and BYOL-ViT: timm's ViT with the methods' options.

ViT-S/16 as DINO's vision_transformer.py `vit_small` (Caron et al. 2021; facebookresearch/dino):
384-d, 12 blocks, 6 heads, MLP ratio 4, qkv_bias, LayerNorm eps 1e-6, a [CLS] token and a final
LayerNorm; ViT-B/16 (`vit_base`) is 768-d with 12 heads. SelfPatch's ViT (Yun et al. 2022,
selfpatch_vision_transformer.py) has neither the [CLS] token (its pos_embed covers the patches
only) nor the final norm: `cls_token=False, final_norm=False`. No weights are ever downloaded.

`ViTEncoder` subclasses timm's VisionTransformer (no classifier: num_classes 0) so its state_dict
keys are timm's and DINO's own (cls_token, pos_embed, patch_embed.proj.*, blocks.N.norm1.*,
blocks.N.attn.qkv.*, blocks.N.attn.proj.*, blocks.N.norm2.*, blocks.N.mlp.fc1/fc2.*, norm.*):
DINO's released dino_deitsmall16_pretrain.pth loads with strict=True. Initialisation is timm's,
which equals DINO's (trunc-normal 0.02 Linear weights, zero biases, trunc-normal 0.02 pos_embed)
except the [CLS] token, which timm draws with std 1e-6: it is redrawn here as DINO does
(trunc-normal, std 0.02).

Position embeddings for other input sizes (local crops, dense evaluation) are interpolated as DINO's
`interpolate_pos_encoding`: bicubic, `scale_factor = (h + 0.1) / sqrt(N)` (DINO issue #8: the 0.1
avoids a floating-point off-by-one), no antialiasing, the [CLS] entry kept. timm's own
`dynamic_img_size` (timm/layers/pos_embed.py `resample_abs_pos_embed`) differs in two ways: it
interpolates to an exact `size=(h, w)`, so the sampling grid maps with scale h / sqrt(N) instead
of (h + 0.1) / sqrt(N), and it antialiases (`antialias=True`), which changes every value when the
grid shrinks (e.g. 14x14 -> 6x6 for DINO's 96 px local crops). The two give different features;
DINO's is used (tests/pretrain/test_vit.py compares against both).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from pretrain.config import ConfigError

# name -> (patch size, embed dim, depth, heads, pretraining image size of pos_embed)
VIT_ARCHS: dict[str, tuple[int, int, int, int, int]] = {
    "vit_small_patch16": (16, 384, 12, 6, 224),  # DINO vision_transformer.py vit_small
    "vit_base_patch16": (16, 768, 12, 12, 224),  # DINO vision_transformer.py vit_base
    "vit_tiny_test": (4, 32, 4, 2, 32),  # tests only: 8x8 patches at 32 px
    "vit_tiny12_test": (4, 32, 12, 2, 32),  # tests only: 12 blocks, as ViT-S/B (dense protocols)
}


def interpolate_pos_embed(
    pos_embed: torch.Tensor, grid: tuple[int, int], num_prefix_tokens: int
) -> torch.Tensor:
    """`pos_embed` [1, prefix + N, D] resampled to a (h, w) patch grid, as DINO's
    vision_transformer.py `interpolate_pos_encoding` (bicubic, scale (h + 0.1) / sqrt(N))."""
    height, width = grid
    num_patches = pos_embed.shape[1] - num_prefix_tokens
    if num_patches == height * width and height == width:
        return pos_embed
    dim, side = pos_embed.shape[-1], int(math.sqrt(num_patches))
    prefix, patch_pos = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    patch_pos = F.interpolate(
        patch_pos.reshape(1, side, side, dim).permute(0, 3, 1, 2),  # [1, D, side, side]
        scale_factor=((height + 0.1) / side, (width + 0.1) / side),
        mode="bicubic",
    )  # [1, D, h, w]
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, height * width, dim)
    return torch.cat((prefix, patch_pos), dim=1)


class ViTEncoder(VisionTransformer):
    """timm's ViT as an encoder: [B, 3, H, W] -> pooled [B, D], with the methods' token views.

    Any H, W divisible by the patch size work (the position embedding is interpolated).
    Attributes: patch_size (int), embed_dim, feature_dim (= embed_dim), has_cls_token,
    has_final_norm.
    """

    def __init__(
        self,
        *,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        img_size: int = 224,
        cls_token: bool = True,
        final_norm: bool = True,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            num_classes=0,
            global_pool="token" if cls_token else "avg",
            fc_norm=False,  # the final norm acts on the tokens, before pooling (DINO)
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=4.0,
            qkv_bias=True,
            class_token=cls_token,
            final_norm=final_norm,
            dynamic_img_size=True,
            drop_path_rate=drop_path_rate,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
        )
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)  # DINO; timm draws std 1e-6
        self.patch_size = patch_size
        self.feature_dim = embed_dim
        self.has_cls_token = cls_token
        self.has_final_norm = final_norm

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """The (h, w) patch grid of a height x width image; ConfigError if it does not divide."""
        if height % self.patch_size or width % self.patch_size:
            raise ConfigError(
                f"image size {height}x{width} is not a multiple of the patch size "
                f"{self.patch_size}: the ViT cuts images into {self.patch_size}x{self.patch_size} "
                "patches, so use a size divisible by it (e.g. "
                f"{height // self.patch_size * self.patch_size or self.patch_size} px)"
            )
        return height // self.patch_size, width // self.patch_size

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """[B, h, w, D] patch embeddings -> [B, prefix + h*w, D] tokens with positions (DINO)."""
        batch, height, width, dim = x.shape
        x = x.reshape(batch, height * width, dim)
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(batch, -1, -1), x), dim=1)
        x = x + interpolate_pos_embed(self.pos_embed, (height, width), self.num_prefix_tokens)
        return self.pos_drop(x)

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        self.grid(images.shape[-2], images.shape[-1])
        return self.norm_pre(self.patch_drop(self._pos_embed(self.patch_embed(images))))

    def _pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, prefix + N, D] (final-normed) -> [B, D]: the [CLS] token, else the patch mean."""
        return tokens[:, 0] if self.has_cls_token else tokens.mean(dim=1)

    def forward_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled [B, D], last-block patch tokens [B, N, D]) from one forward pass; both after
        the final norm when it exists; N = h*w in row-major order of the patch grid."""
        tokens = self.forward_features(images)  # [B, prefix + N, D], final norm applied
        return self._pool(tokens), tokens[:, self.num_prefix_tokens :]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The pooled feature [B, D] (linear probe, kNN, fine-tuning): the final-normed [CLS]
        token (DINO); without [CLS], the mean of the last block's (normed) patch tokens."""
        return self.forward_tokens(images)[0]

    def patch_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """The last block's patch tokens [B, N, D] (no [CLS]; after the final norm if any)."""
        return self.forward_tokens(images)[1]

    def forward_features(self, images: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """[B, 3, H, W] -> all tokens [B, prefix + N, D] after the blocks and the final norm."""
        if args or kwargs:
            raise TypeError("ViTEncoder.forward_features takes the images only")
        return self.norm(self.blocks(self._embed(images)))

    def _block_outputs(self, images: torch.Tensor, wanted: set[int]) -> dict[int, torch.Tensor]:
        """{block index: its output tokens [B, prefix + N, D]} for the `wanted` blocks."""
        x, outputs = self._embed(images), {}
        for index, block in enumerate(self.blocks):
            if index > max(wanted):
                break
            x = block(x)
            if index in wanted:
                outputs[index] = x
        return outputs

    def _block_indices(self, blocks: Sequence[int]) -> list[int]:
        depth = len(self.blocks)
        if not blocks or any(not -depth <= b < depth for b in blocks):
            raise ConfigError(
                f"block indices {list(blocks)} out of range: this ViT has {depth} blocks "
                f"(0..{depth - 1}, or negative from the end)"
            )
        return [b % depth for b in blocks]

    def block_patch_tokens(self, images: torch.Tensor, blocks: Sequence[int]) -> list[torch.Tensor]:
        """Chosen blocks' patch tokens as grids [B, D, h, w] (dense evaluation), in the order of
        `blocks` (0-based, negative from the end). Raw block outputs, without the final norm, as
        the SelfPatch/BEiT detection and segmentation backbones take them."""
        indices = self._block_indices(blocks)
        height, width = self.grid(images.shape[-2], images.shape[-1])
        outputs = self._block_outputs(images, set(indices))
        grids = []
        for index in indices:
            patches = outputs[index][:, self.num_prefix_tokens :]  # [B, N, D]
            grids.append(patches.transpose(1, 2).reshape(len(images), -1, height, width))
        return grids

    def dino_linear_features(
        self, images: torch.Tensor, n_last_blocks: int = 4, avgpool: bool = False
    ) -> torch.Tensor:
        """DINO eval_linear.py's feature: the final-normed [CLS] tokens of the last
        `n_last_blocks` blocks, concatenated [B, n*D] (n = 4 for ViT-S/16). `avgpool` (DINO's
        ViT-B/16 recipe, n = 1) also takes the mean of the last block's normed patch tokens;
        as DINO's code, the two are interleaved (cat on a new last axis, then flattened) [B, 2D].
        """
        if not self.has_cls_token:
            raise ConfigError(
                "the DINO linear feature is built from [CLS] tokens, and this ViT has none "
                "(cls_token false); use the pooled feature (the standard linear protocol)"
            )
        if avgpool and n_last_blocks != 1:
            raise ConfigError(
                "DINO's avgpool feature is defined for n_last_blocks 1 only (eval_linear.py "
                f"concatenates [CLS] and the patch mean per channel); got {n_last_blocks}"
            )
        depth = len(self.blocks)
        indices = self._block_indices(list(range(depth - n_last_blocks, depth)))
        outputs = self._block_outputs(images, set(indices))
        normed = [self.norm(outputs[index]) for index in indices]  # [B, 1 + N, D] each
        features = torch.cat([tokens[:, 0] for tokens in normed], dim=-1)  # [B, n*D]
        if avgpool:
            patch_mean = normed[-1][:, 1:].mean(dim=1)  # [B, D]
            features = torch.stack((features, patch_mean), dim=-1).reshape(len(images), -1)
        return features


def build_vit(
    name: str,
    *,
    drop_path_rate: float = 0.0,
    cls_token: bool = True,
    final_norm: bool = True,
    num_heads: int | None = None,
) -> tuple[ViTEncoder, int]:
    """(ViTEncoder `name` of VIT_ARCHS, embed dim). `num_heads` overrides the heads (SelfPatch's
    Mask R-CNN config uses 8 on ViT-S/16 weights; None = the architecture's own)."""
    patch_size, embed_dim, depth, heads, img_size = VIT_ARCHS[name]
    heads = heads if num_heads is None else num_heads
    if heads < 1 or embed_dim % heads:
        raise ConfigError(f"{name}: num_heads {heads} does not divide the embed dim {embed_dim}")
    if not 0.0 <= drop_path_rate < 1.0:
        raise ConfigError(f"drop_path_rate {drop_path_rate} must be in [0, 1)")
    encoder = ViTEncoder(
        patch_size=patch_size,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=heads,
        img_size=img_size,
        cls_token=cls_token,
        final_norm=final_norm,
        drop_path_rate=drop_path_rate,
    )
    return encoder, embed_dim
