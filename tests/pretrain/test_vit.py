"""The ViT backbones (pretrain/vit.py) against DINO's vision_transformer.py, written out here."""

import math

import pytest
import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.layers.pos_embed import resample_abs_pos_embed

from pretrain.backbones import build_backbone, is_vit
from pretrain.config import ConfigError

TINY = "vit_tiny_test"  # patch 4, 32-d, 4 blocks, 2 heads, pos_embed for 32 px (8x8)


def dino_vits16_keys() -> dict[str, tuple[int, ...]]:
    """The state_dict of DINO's released ViT-S/16 (dino_deitsmall16_pretrain.pth), as
    facebookresearch/dino vision_transformer.py names it: vit_small(patch_size=16), 224 px."""
    dim, hidden = 384, 4 * 384
    keys = {
        "cls_token": (1, 1, dim),
        "pos_embed": (1, 197, dim),
        "patch_embed.proj.weight": (dim, 3, 16, 16),
        "patch_embed.proj.bias": (dim,),
        "norm.weight": (dim,),
        "norm.bias": (dim,),
    }
    for block in range(12):
        prefix = f"blocks.{block}."
        keys.update(
            {
                prefix + "norm1.weight": (dim,),
                prefix + "norm1.bias": (dim,),
                prefix + "attn.qkv.weight": (3 * dim, dim),
                prefix + "attn.qkv.bias": (3 * dim,),
                prefix + "attn.proj.weight": (dim, dim),
                prefix + "attn.proj.bias": (dim,),
                prefix + "norm2.weight": (dim,),
                prefix + "norm2.bias": (dim,),
                prefix + "mlp.fc1.weight": (hidden, dim),
                prefix + "mlp.fc1.bias": (hidden,),
                prefix + "mlp.fc2.weight": (dim, hidden),
                prefix + "mlp.fc2.bias": (dim,),
            }
        )
    return keys


def dino_pos_encoding(pos_embed, height, width, patch_size, prefix=1):
    """DINO's interpolate_pos_encoding (vision_transformer.py), for a prefix of 0 or 1 tokens."""
    npatch = (height // patch_size) * (width // patch_size)
    num = pos_embed.shape[1] - prefix
    if npatch == num and height == width:
        return pos_embed
    dim = pos_embed.shape[-1]
    h0, w0 = height // patch_size + 0.1, width // patch_size + 0.1
    patch_pos = F.interpolate(
        pos_embed[:, prefix:]
        .reshape(1, int(math.sqrt(num)), int(math.sqrt(num)), dim)
        .permute(0, 3, 1, 2),
        scale_factor=(h0 / math.sqrt(num), w0 / math.sqrt(num)),
        mode="bicubic",
    )
    assert int(h0) == patch_pos.shape[-2] and int(w0) == patch_pos.shape[-1]
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat((pos_embed[:, :prefix], patch_pos), dim=1)


def reference_tokens(model, images, pos_embed_fn=dino_pos_encoding):
    """The outputs of every block, from timm's modules, as DINO's prepare_tokens + blocks."""
    batch, _, height, width = images.shape
    x = model.patch_embed.proj(images).flatten(2).transpose(1, 2)  # [B, N, D]
    prefix = 1 if model.cls_token is not None else 0
    if prefix:
        x = torch.cat((model.cls_token.expand(batch, -1, -1), x), dim=1)
    x = x + pos_embed_fn(model.pos_embed, height, width, model.patch_size, prefix)
    outputs = []
    for block in model.blocks:
        x = block(x)
        outputs.append(x)
    return outputs


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def tiny(**options):
    torch.manual_seed(0)
    model, dim = build_backbone(TINY, **options)
    return model.eval(), dim


def test_registry_names_and_sizes():
    for name, (dim, depth, heads, patch) in {
        "vit_small_patch16": (384, 12, 6, 16),
        "vit_base_patch16": (768, 12, 12, 16),
        TINY: (32, 4, 2, 4),
    }.items():
        assert is_vit(name)
        with torch.device("meta"):
            model, feature_dim = build_backbone(name)
        assert (feature_dim, model.embed_dim, model.feature_dim) == (dim, dim, dim)
        assert len(model.blocks) == depth and model.patch_size == patch
        assert model.blocks[0].attn.num_heads == heads
        assert model.norm.eps == 1e-6 and model.blocks[0].attn.qkv.bias is not None
    with torch.device("meta"):
        params = sum(p.numel() for p in build_backbone("vit_small_patch16")[0].parameters())
    assert params == sum(math.prod(shape) for shape in dino_vits16_keys().values())  # 21.7M


def test_dino_released_vits16_layout_loads_strictly():
    model, _ = build_backbone("vit_small_patch16")
    generator = torch.Generator().manual_seed(1)
    released = {k: torch.randn(s, generator=generator) for k, s in dino_vits16_keys().items()}
    assert model.load_state_dict(released, strict=True)  # no missing / unexpected keys
    assert torch.equal(
        model.state_dict()["blocks.11.mlp.fc2.weight"], released["blocks.11.mlp.fc2.weight"]
    )


def test_shapes_of_every_view(images):
    model, dim = tiny()
    pooled, patches = model.forward_tokens(images)
    assert model(images).shape == pooled.shape == (3, dim)
    assert model.patch_tokens(images).shape == patches.shape == (3, 64, dim)
    grids = model.block_patch_tokens(images, [0, -1])
    assert [tuple(g.shape) for g in grids] == [(3, dim, 8, 8)] * 2
    assert model.grid(32, 48) == (8, 12)
    assert model(torch.randn(2, 3, 16, 24)).shape == (2, dim)
    assert model.dino_linear_features(images).shape == (3, 4 * dim)
    assert model.dino_linear_features(images, 1, avgpool=True).shape == (3, 2 * dim)


@pytest.mark.parametrize("cls_token", [True, False])
@pytest.mark.parametrize("final_norm", [True, False])
def test_pooled_feature_and_patch_tokens_against_the_blocks(images, cls_token, final_norm):
    model, _ = tiny(cls_token=cls_token, final_norm=final_norm)
    keys = set(model.state_dict())
    assert ("cls_token" in keys) == cls_token and ("norm.weight" in keys) == final_norm
    assert model.pos_embed.shape == (1, 64 + cls_token, 32)  # SelfPatch: patches only
    with torch.no_grad():
        last = reference_tokens(model, images)[-1]
        normed = (
            F.layer_norm(last, (32,), model.norm.weight, model.norm.bias, 1e-6)
            if final_norm
            else last
        )
        pooled, patches = model.forward_tokens(images)
        expected = normed[:, 0] if cls_token else normed.mean(dim=1)
        torch.testing.assert_close(pooled, expected)
        torch.testing.assert_close(patches, normed[:, int(cls_token) :])
        torch.testing.assert_close(model(images), expected)
        grid = model.block_patch_tokens(images, [2])[0]  # raw block 2 output, no final norm
        block2 = reference_tokens(model, images)[2][:, int(cls_token) :]
        torch.testing.assert_close(grid, block2.transpose(1, 2).reshape(3, 32, 8, 8))
        # row-major patch order: token r * w + c is the patch at row r, column c
        torch.testing.assert_close(grid[:, :, 1, 2], block2[:, 1 * 8 + 2])


def test_dino_linear_features_is_the_concatenated_normed_cls_of_the_last_blocks(images):
    model, _ = tiny()
    with torch.no_grad():
        outputs = reference_tokens(model, images)
        normed = [model.norm(x) for x in outputs]  # DINO get_intermediate_layers
        expected = torch.cat([x[:, 0] for x in normed[-4:]], dim=-1)
        torch.testing.assert_close(model.dino_linear_features(images, 4), expected)
        torch.testing.assert_close(model.dino_linear_features(images, 2), expected[:, 64:])
        # avgpool (DINO's ViT-B recipe, n = 1): [CLS] and patch mean interleaved per channel
        interleaved = torch.cat(
            (normed[-1][:, 0].unsqueeze(-1), normed[-1][:, 1:].mean(dim=1).unsqueeze(-1)), dim=-1
        ).reshape(3, -1)
        torch.testing.assert_close(model.dino_linear_features(images, 1, avgpool=True), interleaved)
    with pytest.raises(ConfigError, match="n_last_blocks 1 only"):
        model.dino_linear_features(images, 4, avgpool=True)
    with pytest.raises(ConfigError, match="has none"):
        tiny(cls_token=False)[0].dino_linear_features(images)


@pytest.mark.parametrize("size", [(48, 48), (16, 16), (24, 40)])
def test_other_input_sizes_interpolate_the_position_embedding_as_dino(size):
    model, _ = tiny()
    torch.nn.init.normal_(model.pos_embed)  # a position embedding that matters
    images = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model.norm(reference_tokens(model, images)[-1])[:, 0]
        torch.testing.assert_close(model(images), expected)

        def timm_resample(pos_embed, height, width, patch_size, prefix):
            grid = [height // patch_size, width // patch_size]
            return resample_abs_pos_embed(pos_embed, grid, num_prefix_tokens=prefix)

        timm_way = model.norm(reference_tokens(model, images, timm_resample)[-1])[:, 0]
    # timm's dynamic_img_size resamples differently (exact size, antialiased): the DEVIATION
    # documented in pretrain/vit.py's docstring, DINO's formula is the one used
    assert not torch.allclose(model(images), timm_way, atol=1e-4)


def test_an_image_size_off_the_patch_grid_is_refused_with_one_sentence():
    model, _ = tiny()
    with pytest.raises(
        ConfigError, match=r"image size 30x32 is not a multiple of the patch size 4"
    ):
        model(torch.randn(1, 3, 30, 32))
    with torch.device("meta"):
        vits = build_backbone("vit_small_patch16")[0]
    with pytest.raises(ConfigError) as error:
        vits.grid(225, 225)
    assert str(error.value).startswith("image size 225x225 is not a multiple of the patch size 16")
    assert "\n" not in str(error.value)


def test_drop_path_only_in_the_student_that_asks_for_it(images):
    student, _ = tiny(drop_path_rate=0.1)
    teacher, _ = tiny()
    rates = [getattr(block.drop_path1, "drop_prob", 0.0) for block in student.blocks]
    # DINO: torch.linspace(0, drop_path_rate, depth), per block
    assert rates == pytest.approx(torch.linspace(0, 0.1, 4).tolist())
    assert not any(isinstance(m, DropPath) for m in teacher.modules())
    student.load_state_dict(teacher.state_dict())
    student.train(), teacher.train()
    torch.manual_seed(3)
    assert not torch.equal(student(images), student(images))  # stochastic depth is active
    assert torch.equal(teacher(images), teacher(images))
    student.eval()
    torch.testing.assert_close(student(images), teacher.eval()(images))


def test_options_each_family_refuses_and_num_heads_override():
    with pytest.raises(ConfigError, match="is a ResNet"):
        build_backbone("resnet18", cls_token=False)
    with pytest.raises(ConfigError, match="is a ResNet"):
        build_backbone("resnet18", drop_path_rate=0.1)
    with pytest.raises(ConfigError, match="is a ViT"):
        build_backbone(TINY, cifar_stem=True)
    with pytest.raises(ConfigError, match="does not divide"):
        build_backbone(TINY, num_heads=3)
    with torch.device("meta"):
        eight, _ = build_backbone("vit_small_patch16", num_heads=8)  # SelfPatch's Mask R-CNN
        six, _ = build_backbone("vit_small_patch16")
    assert eight.blocks[0].attn.num_heads == 8
    assert {k: v.shape for k, v in eight.state_dict().items()} == {
        k: v.shape for k, v in six.state_dict().items()
    }
