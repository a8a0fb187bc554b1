"""Small ImageFolder trees (root/<class>/img_XXX.png) generated on disk for tests."""

import torch
from PIL import Image


def make_image_folder(root, classes=("a", "b", "c"), per_class=6, size=16, seed=0):
    """root/<class>/img_XXX.png with random pixels; returns root."""
    generator = torch.Generator().manual_seed(seed)
    for name in classes:
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            pixels = torch.randint(0, 256, (size, size, 3), generator=generator, dtype=torch.uint8)
            Image.fromarray(pixels.numpy()).save(root / name / f"img_{index:03d}.png")
    return root
