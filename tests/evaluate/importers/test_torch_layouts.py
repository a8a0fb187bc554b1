"""Every PyTorch SSL library's layout, written exactly as the library saves it (keys, wrappers,
extra heads, queues, Namespace / AttributeDict hparams) from a torchvision ResNet with random
weights and BN statistics, imports to identical features (atol 0)."""

import argparse

import pytest
import torch

from evaluate.importers import load_foreign
from pretrain.backbones import build_backbone
from tests.evaluate.importers.writers import (
    features_without_fc,
    mlp_state,
    prefixed,
    reference_resnet,
    save_with_attribute_dict,
    trunk_state,
    write_moco,
)

IMAGES = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
CIFAR_IMAGES = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def encoder_from(state_dict: dict, metadata: dict) -> torch.nn.Module:
    """What an evaluator builds from the importer's output (strict)."""
    model, _ = build_backbone(
        metadata["arch"],
        cifar_stem=metadata["cifar_stem"],
        padding=metadata["padding"],
        stem_padding=metadata["stem_padding"],
    )
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def assert_same_features(path, reference, images=IMAGES, **kwargs) -> dict:
    state_dict, metadata = load_foreign(path, **kwargs)
    with torch.no_grad():
        ours = encoder_from(state_dict, metadata)(images)
    expected = features_without_fc(reference, images)
    difference = (ours - expected).abs().max().item()
    print(
        f"{path.name} ({metadata['source_format']}, {metadata['network']}): max diff {difference}"
    )
    assert torch.equal(ours, expected)
    return metadata


def _sgd_state() -> dict:
    return {"state": {0: {"momentum_buffer": torch.randn(3)}}, "param_groups": [{"lr": 0.03}]}


def test_moco_v2(tmp_path):
    online, momentum = reference_resnet(seed=1), reference_resnet(seed=2)
    state = {
        **prefixed(trunk_state(online), "module.encoder_q."),
        **mlp_state("module.encoder_q.fc.", [512, 512, 128], batchnorm=False),
        **prefixed(trunk_state(momentum), "module.encoder_k."),
        **mlp_state("module.encoder_k.fc.", [512, 512, 128], batchnorm=False),
        "module.queue": torch.randn(128, 4096),
        "module.queue_ptr": torch.zeros(1, dtype=torch.long),
    }
    path = tmp_path / "moco_v2_800ep_pretrain.pth.tar"
    torch.save(
        {"epoch": 800, "arch": "resnet18", "state_dict": state, "optimizer": _sgd_state()}, path
    )
    metadata = assert_same_features(path, online)
    assert (metadata["source_format"], metadata["method"], metadata["network"]) == (
        "moco",
        "moco-v2",
        "online",
    )
    assert metadata["pretrain_epochs"] == 800
    assert_same_features(path, momentum, network="target")


def test_moco_v1(tmp_path):
    online = reference_resnet(seed=3)
    path = write_moco(tmp_path, online, reference_resnet(seed=4))
    assert assert_same_features(path, online)["method"] == "moco-v1"


def test_moco_v3(tmp_path):
    online, momentum = reference_resnet(seed=5), reference_resnet(seed=6)
    state = {
        **prefixed(trunk_state(online), "module.base_encoder."),
        **mlp_state("module.base_encoder.fc.", [512, 4096, 256]),
        **prefixed(trunk_state(momentum), "module.momentum_encoder."),
        **mlp_state("module.momentum_encoder.fc.", [512, 4096, 256]),
        **mlp_state("module.predictor.", [256, 4096, 256]),
    }
    path = tmp_path / "r-50-1000ep.pth.tar"
    blob = {
        "epoch": 1000,
        "arch": "resnet18",
        "state_dict": state,
        "optimizer": _sgd_state(),
        "scaler": {"scale": 65536.0, "growth_factor": 2.0},
    }
    torch.save(blob, path)
    assert assert_same_features(path, online)["source_format"] == "moco-v3"
    assert_same_features(path, momentum, network="target")


def test_dino_full_checkpoint_with_namespace_args(tmp_path):
    student, teacher = reference_resnet(seed=7), reference_resnet(seed=8)
    head = mlp_state("head.mlp.", [512, 2048, 256], batchnorm=False)
    head["head.last_layer.weight_g"] = torch.ones(65536, 1)
    blob = {
        "student": {
            **prefixed(trunk_state(student), "module.backbone."),
            **prefixed(head, "module."),
        },
        "teacher": {**prefixed(trunk_state(teacher), "backbone."), **head},
        "optimizer": _sgd_state(),
        "epoch": 100,
        "args": argparse.Namespace(arch="resnet50", out_dim=65536, lr=0.03, batch_size_per_gpu=64),
        "dino_loss": {"center": torch.zeros(1, 65536)},
        "fp16_scaler": None,
    }
    path = tmp_path / "checkpoint.pth"
    torch.save(blob, path)
    metadata = assert_same_features(path, teacher)  # DINO evaluates the teacher
    assert (metadata["source_format"], metadata["network"]) == ("dino", "target")
    assert_same_features(path, student, network="online")


def test_dino_plain_release_is_torchvision_without_fc(tmp_path):
    model = reference_resnet(seed=9)
    path = tmp_path / "dino_resnet50_pretrain.pth"
    torch.save(trunk_state(model), path)
    assert assert_same_features(path, model)["source_format"] == "torchvision"


@pytest.mark.parametrize("wrapped", [False, True])
def test_swav(tmp_path, wrapped):
    model = reference_resnet(seed=10)
    state = {
        **prefixed(trunk_state(model), "module."),
        **mlp_state("module.projection_head.", [512, 2048, 128]),
        "module.prototypes.weight": torch.randn(3000, 128),
    }
    path = tmp_path / ("checkpoint.pth.tar" if wrapped else "swav_800ep_pretrain.pth.tar")
    torch.save(
        {"epoch": 800, "state_dict": state, "optimizer": _sgd_state()} if wrapped else state, path
    )
    metadata = assert_same_features(path, model)
    assert (metadata["source_format"], metadata["method"]) == ("swav", "swav")


def _lightning(state: dict, hyper_parameters) -> dict:
    """The keys a Lightning Trainer writes (its checkpoint_connector.py, dump_checkpoint)."""
    return {
        "epoch": 999,
        "global_step": 195000,
        "pytorch-lightning_version": "1.9.5",
        "state_dict": state,
        "loops": {
            "fit_loop": {"state_dict": {}, "epoch_progress": {"current": {"completed": 999}}}
        },
        "callbacks": {"ModelCheckpoint{'monitor': None}": {"best_model_score": None}},
        "optimizer_states": [_sgd_state()],
        "lr_schedulers": [{"last_epoch": 999}],
        "hparams_name": "kwargs",
        "hyper_parameters": hyper_parameters,
    }


def _solo_learn_state(online, momentum) -> dict:
    return {
        **prefixed(trunk_state(online), "backbone."),
        **mlp_state("projector.", [512, 4096, 256]),
        **mlp_state("predictor.", [256, 4096, 256]),
        **prefixed(trunk_state(momentum), "momentum_backbone."),
        **mlp_state("momentum_projector.", [512, 4096, 256]),
        "classifier.weight": torch.randn(10, 512),
        "classifier.bias": torch.randn(10),
    }


def test_solo_learn_cifar_stem_with_attribute_dict_hparams(tmp_path):
    online = reference_resnet(seed=11, cifar_padding=2)
    momentum = reference_resnet(seed=12, cifar_padding=2)
    path = tmp_path / "byol-cifar10-ep=999.ckpt"
    save_with_attribute_dict(
        path,
        lambda attribute_dict: _lightning(
            _solo_learn_state(online, momentum),
            attribute_dict(method="byol", backbone="resnet18", cifar=True, max_epochs=1000),
        ),
    )
    metadata = assert_same_features(path, online, images=CIFAR_IMAGES)
    assert metadata["source_format"] == "solo-learn" and metadata["method"] == "byol"
    assert metadata["cifar_stem"] is True and metadata["stem_padding"] == 2
    assert metadata["preprocessing"]["image_size"] == 32
    assert_same_features(path, momentum, images=CIFAR_IMAGES, network="target")


def test_solo_learn_never_mistakes_momentum_backbone_for_backbone(tmp_path):
    """A substring replace of "backbone." turns momentum_backbone.* into momentum_* keys that
    collide; exact prefixes keep the two networks apart."""
    online, momentum = reference_resnet(seed=13), reference_resnet(seed=14)
    path = tmp_path / "solo.ckpt"
    torch.save(_lightning(_solo_learn_state(online, momentum), {"method": "byol"}), path)
    state_dict, _ = load_foreign(path)
    assert not any(key.startswith("momentum") for key in state_dict)
    assert torch.equal(state_dict["layer1.0.conv1.weight"], online.layer1[0].conv1.weight)


def test_lightly_byol_teacher_backbone(tmp_path):
    online, teacher = reference_resnet(seed=15), reference_resnet(seed=16)
    state = {
        **prefixed(trunk_state(online), "backbone."),
        **mlp_state("projection_head.layers.", [512, 4096, 256]),
        **mlp_state("prediction_head.layers.", [256, 4096, 256]),
        **prefixed(trunk_state(teacher), "teacher_backbone."),
        **mlp_state("teacher_projection_head.layers.", [512, 4096, 256]),
        "online_classifier.classification_head.weight": torch.randn(1000, 512),
        "online_classifier.classification_head.bias": torch.randn(1000),
    }
    path = tmp_path / "epoch=99-step=500400.ckpt"
    torch.save(_lightning(state, {"batch_size_per_device": 128, "num_classes": 1000}), path)
    metadata = assert_same_features(path, online)
    assert metadata["source_format"] == "lightly"
    assert_same_features(path, teacher, network="target")


def test_lightly_sequential_backbone_and_backbone_momentum(tmp_path):
    """lightly's examples: backbone = nn.Sequential(*list(resnet.children())[:-1])."""
    online, momentum = reference_resnet(seed=17), reference_resnet(seed=18)
    children = {
        "conv1": "0",
        "bn1": "1",
        "layer1": "4",
        "layer2": "5",
        "layer3": "6",
        "layer4": "7",
    }

    def sequential(model, prefix):
        state = trunk_state(model)
        return {
            f"{prefix}{children[k.split('.')[0]]}.{k.partition('.')[2]}": v
            for k, v in state.items()
        }

    state = {
        **sequential(online, "backbone."),
        **sequential(momentum, "backbone_momentum."),
        **mlp_state("projection_head.layers.", [512, 1024, 128]),
    }
    path = tmp_path / "lightly_byol.ckpt"
    save_with_attribute_dict(
        path,
        lambda attribute_dict: _lightning(state, attribute_dict(max_epochs=10)),
        module="lightning_fabric.utilities.data",
    )
    assert assert_same_features(path, online)["source_format"] == "lightly"
    assert_same_features(path, momentum, network="target")


def test_lightly_dino_backbone_is_the_teacher(tmp_path):
    teacher, student = reference_resnet(seed=19), reference_resnet(seed=20)
    state = {
        **prefixed(trunk_state(teacher), "backbone."),
        **prefixed(trunk_state(student), "student_backbone."),
        **mlp_state("projection_head.layers.", [512, 2048, 256], batchnorm=False),
    }
    path = tmp_path / "lightly_dino.ckpt"
    torch.save(_lightning(state, {"batch_size_per_device": 64, "num_classes": 1000}), path)
    assert_same_features(path, student)
    assert_same_features(path, teacher, network="target")


def test_mmselfsup(tmp_path):
    model = reference_resnet(seed=21)
    state = {
        **prefixed(trunk_state(model), "backbone."),
        **mlp_state("neck.mlp.", [512, 4096, 256]),
        **mlp_state("head.predictor.mlp.", [256, 4096, 256]),
        "data_preprocessor.mean": torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1),
        "data_preprocessor.std": torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1),
    }
    meta = {
        "epoch": 200,
        "iter": 500400,
        "mmengine_version": "0.10.3",
        "seed": 0,
        "experiment_name": "byol_resnet50_16xb256-coslr-200e_in1k",
        "dataset_meta": {},
    }
    path = tmp_path / "byol_resnet50_16xb256-coslr-200e_in1k_20220825-de817331.pth"
    torch.save({"meta": meta, "state_dict": state}, path, _use_new_zipfile_serialization=False)
    metadata = assert_same_features(path, model)
    assert metadata["source_format"] == "mmselfsup" and metadata["pretrain_epochs"] == 200


def test_vissl(tmp_path):
    model = reference_resnet(seed=22)
    blob = {
        "phase_idx": 199,
        "iteration": 500400,
        "loss": {},
        "iteration_num": 500400,
        "train_phase_idx": 99,
        "classy_state_dict": {
            "base_model": {
                "model": {
                    "trunk": prefixed(trunk_state(model), "_feature_blocks."),
                    "heads": mlp_state("0.clf.", [512, 2048, 128]),
                },
                "meta": {},
            },
            "meta": {"vissl_version": "0.1.6"},
            "optimizer": _sgd_state(),
        },
    }
    path = tmp_path / "model_final_checkpoint_phase199.torch"
    torch.save(blob, path)
    assert assert_same_features(path, model)["source_format"] == "vissl"


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model"])
def test_torchvision_and_timm(tmp_path, wrapper):
    model = reference_resnet(seed=23)
    state = dict(model.state_dict())  # with fc: the supervised classifier, dropped
    path = tmp_path / "resnet18.pth"
    torch.save(state if wrapper is None else {wrapper: state, "epoch": 90}, path)
    metadata = assert_same_features(path, model)
    assert metadata["source_format"] == "torchvision" and metadata["padding"] == "torchvision"


def test_every_format_is_detected_by_its_name(tmp_path):
    """--format NAME reads the same file as auto detection."""
    model = reference_resnet(seed=24)
    path = tmp_path / "moco.pth.tar"
    torch.save({"state_dict": prefixed(trunk_state(model), "module.encoder_q.")}, path)
    auto, _ = load_foreign(path)
    named, metadata = load_foreign(path, format="moco")
    assert metadata["source_format"] == "moco"
    assert all(torch.equal(auto[key], named[key]) for key in auto)
