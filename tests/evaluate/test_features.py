"""Strict loading of every supported weights file, and the feature cache."""

import pytest
import torch
import torchvision

from evaluate import features as features_lib
from evaluate.features import cached_features, load_encoder
from evaluate.harness import checkpoint_ref
from evaluate.transforms import Preprocessing
from pretrain.byol import BYOL
from pretrain.checkpoint import CheckpointError, weights_sha256
from pretrain.data import SyntheticDataset
from results.record import read_records


def torchvision_resnet18() -> torch.nn.Module:
    torch.manual_seed(1)
    model = torchvision.models.resnet18(num_classes=7)
    with torch.no_grad():  # non-trivial BN statistics, so that eval mode matters
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("wrapping", ["bare", "state_dict", "model", "ddp"])
def test_torchvision_resnet18_loads_strictly_and_gives_its_features(tmp_path, wrapping):
    model = torchvision_resnet18()
    state_dict = model.state_dict()
    blob = {
        "bare": state_dict,
        "state_dict": {"state_dict": state_dict, "epoch": torch.tensor(90)},
        "model": {"model": state_dict},
        "ddp": {f"module.{key}": value for key, value in state_dict.items()},
    }[wrapping]
    torch.save(blob, tmp_path / "resnet18.pth")
    encoder, metadata = load_encoder(str(tmp_path / "resnet18.pth"))
    assert (metadata["arch"], metadata["cifar_stem"], metadata["feature_dim"]) == (
        "resnet18",
        False,
        512,
    )
    trunk = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    assert metadata["weights_sha256"] == weights_sha256(trunk)
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    images = torch.randn(3, 3, 64, 64)
    model.fc = torch.nn.Identity()
    with torch.no_grad():
        assert torch.equal(encoder(images), model(images))


def test_files_older_than_bn_step_counters_load(tmp_path):
    state_dict = torchvision_resnet18().state_dict()
    old = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    torch.save(old, tmp_path / "old.pth")
    _, metadata = load_encoder(str(tmp_path / "old.pth"))
    assert metadata["arch"] == "resnet18"


def test_wrong_arch_fails_with_the_key_lists(tmp_path, tiny_export):
    torch.save(torchvision_resnet18().state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(CheckpointError) as error:
        load_encoder(str(tmp_path / "resnet18.pth"), arch="resnet50")
    message = str(error.value)
    assert "missing keys" in message and "'layer1.0.conv3.weight'" in message
    assert "keys with other shapes" in message and "layer1.0.conv1.weight" in message
    assert "--arch" in message
    with pytest.raises(CheckpointError, match=r"missing keys \['layer1.2.bn1.bias'"):
        load_encoder(str(tiny_export), arch="resnet34")  # our export, declared resnet18
    extra = {**torchvision_resnet18().state_dict(), "head.weight": torch.ones(1)}
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"unexpected keys \['head.weight'\]"):
        load_encoder(str(tmp_path / "extra.pth"), arch="resnet18")


def test_unknown_architecture_asks_for_arch(tmp_path):
    torch.save({"conv1.weight": torch.ones(8, 3, 3, 3)}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="cannot infer the architecture.*--arch"):
        load_encoder(str(tmp_path / "odd.pth"))


def test_missing_and_corrupt_files_are_clear_errors(tmp_path, tiny_export):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_encoder(str(tmp_path / "nowhere.pt"))
    (tmp_path / "garbage.pt").write_bytes(b"definitely not a zip file")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_encoder(str(tmp_path / "garbage.pt"))
    (tmp_path / "truncated.pt").write_bytes(tiny_export.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_encoder(str(tmp_path / "truncated.pt"))
    blob = torch.load(tiny_export, weights_only=True)
    blob["state_dict"]["bn1.weight"] += 1.0  # loads fine, but is not what its hash says
    torch.save(blob, tmp_path / "tampered.pt")
    with pytest.raises(CheckpointError, match="damaged"):
        load_encoder(str(tmp_path / "tampered.pt"))


def test_export_and_training_checkpoint_give_the_same_weights(tiny_run, tiny_export):
    from_export, export_meta = load_encoder(str(tiny_export))
    from_checkpoint, ckpt_meta = load_encoder(str(tiny_run / "checkpoints" / "last.pt"))
    assert ckpt_meta["weights_sha256"] == export_meta["weights_sha256"]
    assert tiny_export.name == f"backbone-{ckpt_meta['weights_sha256'][:8]}.pt"
    for key in ("arch", "cifar_stem", "feature_dim", "method", "source", "label"):
        assert ckpt_meta[key] == export_meta[key], key
    assert ckpt_meta["preprocessing"]["image_size"] == export_meta["preprocessing"]["image_size"]
    assert ckpt_meta["pretrain_num_classes"] == 10 and ckpt_meta["pretrain_steps"] == 20
    shared = ("pretrain_dataset", "preprocessing", "config")
    assert all(ckpt_meta[key] == export_meta[key] for key in shared)  # one metadata builder


def test_evaluation_records_name_the_pretrain_record_of_their_export(tiny_run, tiny_export):
    (pretrain_record,) = read_records(tiny_run.parent / "records")
    assert pretrain_record.kind == "pretrain"
    _, metadata = load_encoder(str(tiny_export))
    assert metadata["pretrain_record_id"] == pretrain_record.record_id
    assert checkpoint_ref(metadata).pretrain_record_id == pretrain_record.record_id
    assert pretrain_record.checkpoint.weights_sha256 == metadata["weights_sha256"]


def test_random_init_is_the_seeded_start_of_pretraining():
    _, first = load_encoder("random:resnet18")
    _, again = load_encoder("random:resnet18")
    _, other = load_encoder("random:resnet18", seed=1)
    _, cifar = load_encoder("random:resnet18:cifar")
    assert first["weights_sha256"] == again["weights_sha256"] != other["weights_sha256"]
    assert cifar["cifar_stem"] and cifar["weights_sha256"] != first["weights_sha256"]
    assert first["label"] == "random-init resnet18"
    torch.manual_seed(0)  # what pretrain/train.py does before building BYOL
    byol = BYOL("resnet18", projector_hidden_dim=8, projection_dim=4, predictor_hidden_dim=8)
    assert weights_sha256(byol.online_encoder.state_dict()) == first["weights_sha256"]
    with pytest.raises(CheckpointError, match="unknown architecture"):
        load_encoder("random:resnet17")


def test_feature_cache_is_keyed_and_survives_damage(tmp_path, monkeypatch):
    encoder, metadata = load_encoder("random:resnet18")
    images = SyntheticDataset(num_images=24, image_size=16, seed=3)
    prep = Preprocessing(16, (0.5,) * 3, (0.25,) * 3)
    args = (encoder, metadata["weights_sha256"], images, "train", prep)
    first = cached_features(*args, cache_dir=tmp_path, batch_size=8)
    (cache_file,) = tmp_path.glob("*.pt")
    assert cache_file.name.startswith(f"synthetic-train-{metadata['weights_sha256'][:8]}-")
    real_extract = features_lib.extract_features

    def no_extraction(*_args, **_kwargs):
        raise AssertionError("extracted again despite a valid cache entry")

    monkeypatch.setattr(features_lib, "extract_features", no_extraction)
    second = cached_features(*args, cache_dir=tmp_path, batch_size=8)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert first[0].shape == (24, 512) and first[1].tolist() == images.targets
    monkeypatch.setattr(features_lib, "extract_features", real_extract)
    cached_features(*args[:4], Preprocessing(24, (0.5,) * 3, (0.25,) * 3), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.pt"))) == 2  # another transform, another entry
    cache_file.write_bytes(b"damaged")
    again = cached_features(*args, cache_dir=tmp_path, batch_size=8)
    assert torch.allclose(again[0], first[0], atol=1e-5)
