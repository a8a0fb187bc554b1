"""Every evaluation CLI's --ckpt reads another library's file directly, through the importers
(issue 15, item 1): the record names the import (checkpoint.source "imported:<format>", the
method), and the table labels the row so (results/frame.py)."""

from types import SimpleNamespace

import pytest
import torch

from evaluate import knn
from evaluate.features import load_encoder
from evaluate.finetune import build_classifier
from evaluate.importers import ForeignCheckpointError
from pretrain.backbones import TFSameConv2d, build_backbone
from pretrain.checkpoint import CheckpointError
from results.frame import method_name
from tests.evaluate.conftest import only_record
from tests.evaluate.importers.writers import (
    features_without_fc,
    reference_resnet,
    write_moco,
)


def _moco_file(tmp_path):
    """MoCo v2's main_moco.py checkpoint: encoder_q/encoder_k, the MLP head and the queue."""
    model = reference_resnet(seed=41)
    return write_moco(tmp_path, model, reference_resnet(seed=42), version=2), model


def test_knn_reads_a_moco_file_directly(tmp_path, capsys):
    path, model = _moco_file(tmp_path)
    encoder, metadata = load_encoder(str(path))
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(encoder(images), features_without_fc(model, images))
    assert metadata["padding"] == "torchvision" and metadata["stem_padding"] is None
    records = tmp_path / "records"
    argv = ["--ckpt", str(path), "--dataset", "synthetic", "--image-size", "32"]
    knn.main([*argv, "--records", str(records)])
    checkpoint = only_record(records).checkpoint
    assert (checkpoint.source, checkpoint.method) == ("imported:moco", "moco-v2")
    assert (checkpoint.arch, checkpoint.pretrain_epochs) == ("resnet18", 800)
    assert checkpoint.weights_sha256 == metadata["weights_sha256"]
    assert method_name(only_record(records)) == "MoCo v2 (imported)"


def test_a_file_of_no_known_format_is_refused_with_the_formats(tmp_path):
    torch.save({"weights": {"encoder.stem.weight": torch.ones(2)}}, tmp_path / "odd.pt")
    with pytest.raises(ForeignCheckpointError, match="matches none of the formats") as error:
        load_encoder(str(tmp_path / "odd.pt"))
    assert isinstance(error.value, CheckpointError)  # every --ckpt refusal is one
    assert "byol-haiku" in str(error.value) and "vissl" in str(error.value)


def test_fine_tuning_builds_the_encoder_with_the_weights_padding():
    """evaluate/finetune.py rebuilds the encoder from its metadata: tf-same stays tf-same."""
    reference, _ = build_backbone("resnet18", padding="tf-same")
    setup = SimpleNamespace(
        arch="resnet18",
        cifar_stem=False,
        padding="tf-same",
        stem_padding=None,
        vit_options={},
        init_state=reference.state_dict(),
        num_classes=3,
        seed=0,
        info=SimpleNamespace(world_size=1),
        device=torch.device("cpu"),
    )
    model = build_classifier(setup).eval()
    assert isinstance(model.encoder.conv1, TFSameConv2d)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.encoder(images), reference.eval()(images))
