"""Encoders: parameter counts against BYOL v3 Table 1, torchvision key/feature equality, shapes."""

import pytest
import torch
import torchvision
from torch import nn

from pretrain.backbones import BACKBONES, build_backbone, count_parameters, is_vit
from pretrain.config import ConfigError

META = torch.device("meta")  # shapes and parameter counts without allocating the weights

FEATURE_DIMS = {
    "resnet18": 512,
    "resnet34": 512,
    "resnet50": 2048,
    "resnet50x2": 4096,
    "resnet50x4": 8192,
    "resnet101": 2048,
    "resnet152": 2048,
    "resnet200": 2048,
    "resnet200x2": 4096,
}


def _torchvision_without_fc(name: str) -> nn.Module:
    model = getattr(torchvision.models, name)(weights=None)
    model.fc = nn.Identity()
    return model


@pytest.mark.parametrize(
    ("name", "millions"),
    [
        ("resnet50", 23.5),  # BYOL v3, Table 9: 24M
        ("resnet50x2", 93.9),  # Table 1: 94M
        ("resnet50x4", 375.4),  # Table 1: 375M
        ("resnet200x2", 250.1),  # Table 1: 250M
    ],
)
def test_parameter_counts_match_the_paper(name: str, millions: float) -> None:
    with META:
        model, _ = build_backbone(name)
    assert round(count_parameters(model) / 1e6, 1) == millions


def test_resnet50_count_equals_torchvision_minus_fc_exactly() -> None:
    with META:
        model, _ = build_backbone("resnet50")
    assert count_parameters(model) == 23_508_032


def test_resnet50x2_is_not_torchvision_wide_resnet50_2() -> None:
    with META:
        model, feature_dim = build_backbone("resnet50x2")
        wide = _torchvision_without_fc("wide_resnet50_2")
    assert round(count_parameters(wide) / 1e6, 1) == 66.8
    assert round(count_parameters(model) / 1e6, 1) == 93.9
    # Every layer is widened, stem included: SimCLR/BYOL's width multiplier.
    assert model.conv1.out_channels == 128
    assert model.layer1[0].conv1.out_channels == 128
    assert model.layer1[0].conv3.out_channels == 512
    assert model.layer4[2].conv3.out_channels == feature_dim == 4096


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"])
def test_keys_and_shapes_equal_torchvision_minus_fc(name: str) -> None:
    with META:
        model, _ = build_backbone(name)
        reference = _torchvision_without_fc(name)
    ours = {key: value.shape for key, value in model.state_dict().items()}
    theirs = {key: value.shape for key, value in reference.state_dict().items()}
    assert ours == theirs


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_weights_load_strictly_and_give_the_same_features(name: str) -> None:
    torch.manual_seed(0)
    reference = _torchvision_without_fc(name).eval()
    # Non-trivial BN statistics so that eval-mode BN is exercised.
    for module in reference.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}

    model, feature_dim = build_backbone(name)
    model.load_state_dict(state, strict=True)
    model.eval()

    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features, expected = model(images), reference(images)
    assert features.shape == (2, feature_dim)
    torch.testing.assert_close(features, expected, rtol=0, atol=0)


@pytest.mark.parametrize("cifar_stem", [False, True])
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_output_shape_for_every_registry_entry(name: str, cifar_stem: bool) -> None:
    if cifar_stem and is_vit(name):  # a ViT has no stem to swap: refused with a sentence
        with pytest.raises(ConfigError, match="is a ViT"):
            build_backbone(name, cifar_stem=cifar_stem)
        return
    with META:
        model, feature_dim = build_backbone(name, cifar_stem=cifar_stem)
        features = model.eval()(torch.empty(2, 3, 32, 32))
    assert features.shape == (2, feature_dim)
    if name in FEATURE_DIMS:
        assert feature_dim == FEATURE_DIMS[name]


def test_cifar_stem_is_3x3_stride_1_without_max_pool() -> None:
    model, _ = build_backbone("resnet18", cifar_stem=True)
    assert model.conv1.kernel_size == (3, 3)
    assert model.conv1.stride == (1, 1)
    assert model.conv1.padding == (1, 1)
    assert model.conv1.out_channels == 64
    assert not any(isinstance(module, nn.MaxPool2d) for module in model.modules())

    layer4_shapes = []
    model.layer4.register_forward_hook(lambda _m, _i, out: layer4_shapes.append(out.shape))
    with torch.no_grad():
        features = model.eval()(torch.randn(2, 3, 32, 32))
    assert layer4_shapes == [torch.Size([2, 512, 4, 4])]
    assert features.shape == (2, 512)


def test_imagenet_stem_is_7x7_stride_2_with_max_pool() -> None:
    with META:
        model, _ = build_backbone("resnet50")
    assert model.conv1.kernel_size == (7, 7)
    assert model.conv1.stride == (2, 2)
    assert isinstance(model.maxpool, nn.MaxPool2d)


def test_cifar_stem_keeps_torchvision_keys() -> None:
    with META:
        cifar, _ = build_backbone("resnet18", cifar_stem=True)
        imagenet, _ = build_backbone("resnet18")
    assert cifar.state_dict().keys() == imagenet.state_dict().keys()


def test_init_is_torchvision_without_zero_init_residual() -> None:
    torch.manual_seed(0)
    model, _ = build_backbone("resnet50")
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0)
    # kaiming normal, fan_out: std = sqrt(2 / (out_channels * k * k)) = sqrt(2 / (64 * 49)).
    std = model.conv1.weight.std().item()
    assert abs(std - (2 / (64 * 49)) ** 0.5) < 0.1 * std


def test_unknown_name_lists_the_known_names() -> None:
    with pytest.raises(ValueError, match="resnet5O") as error:
        build_backbone("resnet5O")
    for name in BACKBONES:
        assert name in str(error.value)


# ---------------------------------------------------------------------------------------------
# TF "SAME" padding (the authors' Haiku ResNet) and the stem padding override


def test_tf_same_pads_match_tensorflow_at_224() -> None:
    from pretrain.backbones import tf_same_pads

    # total = max((ceil(n / s) - 1) * s + k - n, 0), left = total // 2 (tf.nn.conv2d, "SAME").
    assert tf_same_pads(224, kernel=7, stride=2) == (2, 3)  # conv1; torchvision pads (3, 3)
    assert tf_same_pads(112, kernel=3, stride=2) == (0, 1)  # max-pool; torchvision (1, 1)
    assert tf_same_pads(56, kernel=3, stride=2) == (0, 1)  # layer2's stride-2 3x3 conv
    assert tf_same_pads(56, kernel=1, stride=2) == (0, 0)  # 1x1 stride-2 shortcut
    assert tf_same_pads(56, kernel=3, stride=1) == (1, 1)  # stride 1: symmetric, as torchvision
    assert tf_same_pads(225, kernel=7, stride=2) == (3, 3)  # odd sizes pad symmetrically


def test_tf_same_keeps_keys_and_swaps_only_strided_layers() -> None:
    from pretrain.backbones import TFSameConv2d, TFSameMaxPool2d

    with META:
        same, _ = build_backbone("resnet50", padding="tf-same")
        plain, _ = build_backbone("resnet50")
    assert same.state_dict().keys() == plain.state_dict().keys()
    swapped = sorted(name for name, m in same.named_modules() if isinstance(m, TFSameConv2d))
    assert swapped == [
        "conv1",
        *[f"layer{i}.0.{conv}" for i in (2, 3, 4) for conv in ("conv2", "downsample.0")],
    ]
    assert isinstance(same.maxpool, TFSameMaxPool2d)
    assert not any(isinstance(m, TFSameConv2d | TFSameMaxPool2d) for m in plain.modules())


def test_tf_same_conv_and_pool_pad_asymmetrically() -> None:
    import torch.nn.functional as F

    torch.manual_seed(0)
    model, _ = build_backbone("resnet18", padding="tf-same")
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        stem = model.conv1(images)
        expected = F.conv2d(F.pad(images, (2, 3, 2, 3)), model.conv1.weight, stride=2)
        torch.testing.assert_close(stem, expected, rtol=0, atol=0)
        pooled = model.maxpool(stem)
        padded = F.pad(stem, (0, 1, 0, 1), value=float("-inf"))
        torch.testing.assert_close(pooled, F.max_pool2d(padded, 3, 2), rtol=0, atol=0)
    assert stem.shape[-1] == 112 and pooled.shape[-1] == 56


def test_padding_modes_give_different_features_from_the_same_weights() -> None:
    torch.manual_seed(0)
    same, _ = build_backbone("resnet18", padding="tf-same")
    plain, _ = build_backbone("resnet18")
    plain.load_state_dict(same.state_dict(), strict=True)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        difference = (same.eval()(images) - plain.eval()(images)).abs().max().item()
    assert difference > 1e-2


def test_stem_padding_2_is_solo_learns_cifar_stem() -> None:
    model, _ = build_backbone("resnet18", cifar_stem=True, stem_padding=2)
    assert model.conv1.padding == (2, 2) and model.conv1.kernel_size == (3, 3)
    layer4_shapes = []
    model.layer4.register_forward_hook(lambda _m, _i, out: layer4_shapes.append(out.shape))
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 32, 32))
    assert layer4_shapes == [torch.Size([1, 512, 5, 5])]  # 32 + 2 * 2 - 2 = 34 -> 17 -> 9 -> 5


def test_unknown_padding_and_conflicting_options_are_refused() -> None:
    with pytest.raises(ValueError, match="tf-same"):
        build_backbone("resnet18", padding="same")
    with pytest.raises(ValueError, match="stem_padding"):
        build_backbone("resnet18", padding="tf-same", stem_padding=2)
