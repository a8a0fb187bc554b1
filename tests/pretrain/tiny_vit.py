"""The tiny ViT of the method tests: the registry's "vit_tiny_test" architecture (pretrain/vit.py
ViTEncoder, patch 4, 32-d, 2 heads) with 2 blocks, so the DINO / SelfPatch / byol-patch tests run
in seconds through the real encoder."""

from pretrain.vit import VIT_ARCHS, ViTEncoder


class TinyViT(ViTEncoder):
    """vit_tiny_test with 2 blocks; any image size divisible by 4."""

    def __init__(
        self, *, cls_token: bool = True, final_norm: bool = True, drop_path_rate: float = 0.0
    ) -> None:
        patch_size, embed_dim, _, num_heads, img_size = VIT_ARCHS["vit_tiny_test"]
        super().__init__(
            patch_size=patch_size,
            embed_dim=embed_dim,
            depth=2,
            num_heads=num_heads,
            img_size=img_size,
            cls_token=cls_token,
            final_norm=final_norm,
            drop_path_rate=drop_path_rate,
        )
