"""`python -m evaluate.convert`: end to end through the real CLI, the export layout of
pretrain/checkpoint.py:export_backbone, exit codes 0 / 1 (error: sentence) / 2 (usage)."""

import json

import torch

from evaluate.convert import main
from evaluate.features import load_encoder
from evaluate.importers.formats import FORMATS
from pretrain.checkpoint import EXPORT_FORMAT, weights_sha256
from tests.conftest import run_cli
from tests.evaluate.importers.writers import (
    features_without_fc,
    reference_resnet,
    write_moco,
)


def _moco_file(tmp_path):
    model = reference_resnet(seed=31)
    return write_moco(tmp_path, model, reference_resnet(seed=32)), model


def test_convert_writes_a_standard_export_that_evaluations_load(tmp_path):
    src, model = _moco_file(tmp_path)
    out = tmp_path / "exports"
    result = run_cli("evaluate.convert", str(src), "--out", str(out), check=True)
    (path,) = out.glob("backbone-*.pt")
    assert result.stdout.strip() == str(path)
    blob = torch.load(path, weights_only=True)
    assert blob["format"] == EXPORT_FORMAT
    metadata = blob["metadata"]
    sha = weights_sha256(blob["state_dict"])
    assert path.name == f"backbone-{sha[:8]}.pt" and metadata["weights_sha256"] == sha
    assert json.loads(path.with_suffix(".json").read_text()) == metadata
    expected = {
        "method": "moco-v1",
        "source_format": "moco",
        "source": "imported:moco",
        "network": "online",
        "arch": "resnet18",
        "cifar_stem": False,
        "padding": "torchvision",
        "pretrain_epochs": 200,
    }
    assert {key: metadata[key] for key in expected} == expected
    assert len(metadata["source_sha256"]) == 64
    assert metadata["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    # Today's --ckpt path reads the export as it reads ours: same weights, same features.
    encoder, loaded = load_encoder(str(path))
    assert loaded["weights_sha256"] == sha
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(encoder(images), features_without_fc(model, images))


def test_out_as_a_file_and_the_default_beside_the_source(tmp_path, capsys):
    src, _ = _moco_file(tmp_path)
    main([str(src), "--out", str(tmp_path / "named.pt")])
    assert (tmp_path / "named.pt").is_file() and (tmp_path / "named.json").is_file()
    main([str(src), "--network", "online", "--arch", "resnet18"])
    assert len(list(tmp_path.glob("backbone-*.pt"))) == 1
    assert capsys.readouterr().out.strip().endswith(".pt")


def test_unknown_file_exits_1_with_the_list_of_formats(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\x00" * 64)
    result = run_cli("evaluate.convert", str(path))
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert all(fmt.name in line for fmt in FORMATS)
    assert "Traceback" not in result.stderr


def test_usage_errors_exit_2_and_every_flag_has_help(tmp_path):
    assert run_cli("evaluate.convert").returncode == 2
    assert run_cli("evaluate.convert", "x.pth", "--format", "simclr").returncode == 2
    help_text = run_cli("evaluate.convert", "--help", check=True).stdout
    for flag in ("--format", "--network", "--arch", "--out"):
        assert flag in help_text
    for fmt in FORMATS:
        assert f"{fmt.name}: " in help_text
