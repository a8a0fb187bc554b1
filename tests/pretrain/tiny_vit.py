"""A tiny ViT stand-in with exactly the encoder face the methods use (contract section A).

forward_tokens(images) -> (pooled [B, D], patch tokens [B, N, D]), grid(height, width) -> (h, w),
embed_dim. Used by the DINO / SelfPatch / byol-patch tests until the ViTEncoder of issue 18's
vit.py is merged; then these tests can build "vit_tiny_test" from the registry instead.
"""

from timm.models.vision_transformer import VisionTransformer
from torch import nn


class TinyViT(VisionTransformer):
    """Patch 4, 32-d, 2 blocks, 2 heads; any image size divisible by 4 (dynamic size)."""

    def __init__(
        self, *, cls_token: bool = True, final_norm: bool = True, drop_path_rate: float = 0.0
    ) -> None:
        super().__init__(
            img_size=16,
            patch_size=4,
            embed_dim=32,
            depth=2,
            num_heads=2,
            num_classes=0,
            class_token=cls_token,
            global_pool="token" if cls_token else "avg",
            fc_norm=False,
            dynamic_img_size=True,
            drop_path_rate=drop_path_rate,
        )
        self.patch_size = 4
        self.has_cls_token = cls_token
        if not final_norm:
            self.norm = nn.Identity()

    def forward_tokens(self, images):
        tokens = self.forward_features(images)  # [B, prefix + N, D]
        patches = tokens[:, self.num_prefix_tokens :]  # [B, N, D]
        pooled = tokens[:, 0] if self.has_cls_token else patches.mean(dim=1)
        return pooled, patches

    def grid(self, height: int, width: int) -> tuple[int, int]:
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"image size {height}x{width} is not a multiple of the patch size")
        return height // self.patch_size, width // self.patch_size
