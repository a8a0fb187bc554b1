"""The command-line contract's quick check, end to end through the real CLI."""

import json

import pytest
import torch

from pretrain.backbones import build_backbone
from pretrain.checkpoint import load_checkpoint, weights_sha256
from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def test_quick_check_leaves_checkpoint_export_and_log(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(
        "pretrain.launch",
        "--preset",
        "tiny_cpu",
        "--dataset",
        "synthetic",
        "--run-dir",
        str(run_dir),
        "--max-steps",
        "20",
        check=True,
    )
    assert "export:" in result.stdout
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert state["step"] == 20
    torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)  # plain types only

    lines = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    # 512 images / batch 16 = 32 steps per epoch: one partial-epoch line at the stop
    assert [(line["epoch"], line["step"]) for line in lines] == [(0.625, 20)]
    for key in (
        "loss",
        "lr",
        "tau",
        "online_probe_train_top1",
        "online_probe_test_top1",
        "img_per_s",
    ):
        assert key in lines[-1]

    (export,) = (run_dir / "exports").glob("backbone-*.pt")
    blob = torch.load(export, weights_only=True)
    sha = weights_sha256(blob["state_dict"])
    assert export.name == f"backbone-{sha[:8]}.pt"
    assert blob["metadata"]["weights_sha256"] == sha
    assert blob["metadata"]["arch"] == "resnet18" and blob["metadata"]["pretrain_steps"] == 20
    assert json.loads(export.with_suffix(".json").read_text())["weights_sha256"] == sha
    # torchvision key names: the export loads strictly into the registry's backbone
    encoder, _ = build_backbone("resnet18")
    encoder.load_state_dict(blob["state_dict"], strict=True)
    online = {
        k.removeprefix("online_encoder."): v
        for k, v in state["model"].items()
        if k.startswith("online_encoder.")
    }
    assert all(torch.equal(online[k], v) for k, v in blob["state_dict"].items())
