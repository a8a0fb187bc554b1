"""Bad input, each refused with one sentence: truncated files, a format with missing keys (named),
the wrong architecture, files that match no format (the list of formats), incomplete ViTs."""

import collections
import pickle

import numpy as np
import pytest
import torch
import torchvision

from evaluate.importers import ForeignCheckpointError, load_foreign
from evaluate.importers.formats import FORMATS
from tests.evaluate.importers.writers import (
    dump_dill_style,
    prefixed,
    reference_resnet,
    trunk_state,
)


def test_truncated_pickle(tmp_path):
    path = tmp_path / "pretrain_res50x1.pkl"
    data = pickle.dumps({"experiment_state": {"w": np.ones((64, 64), "f4")}, "step": 1}, protocol=2)
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ForeignCheckpointError, match="damaged or truncated pickle"):
        load_foreign(path)


def test_truncated_torch_file(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(trunk_state(reference_resnet()), path)
    path.write_bytes(path.read_bytes()[:4096])
    with pytest.raises(ForeignCheckpointError, match="damaged or truncated"):
        load_foreign(path)


def test_byol_release_with_missing_fields_names_them(tmp_path):
    state_type = collections.namedtuple("_ByolExperimentState", ["online_params", "target_params"])
    state_type.__module__ = "byol.byol_experiment"
    path = tmp_path / "pretrain_res50x1.pkl"
    dump_dill_style(path, {"experiment_state": state_type({}, {}), "step": 1, "rng": None})
    with pytest.raises(ForeignCheckpointError) as error:
        load_foreign(path, format="byol-haiku")
    message = str(error.value)
    assert "experiment_state.online_state" in message and "experiment_state.target_state" in message
    with pytest.raises(ForeignCheckpointError, match="matches none of the formats"):
        load_foreign(path)


def test_moco_with_missing_layers_names_the_keys(tmp_path):
    state = prefixed(trunk_state(reference_resnet()), "module.encoder_q.")
    state = {k: v for k, v in state.items() if not k.startswith("module.encoder_q.layer4.1.")}
    path = tmp_path / "moco.pth.tar"
    torch.save({"state_dict": state}, path)
    with pytest.raises(ForeignCheckpointError, match=r"missing keys \['layer4\.1\.bn1") as error:
        load_foreign(path)
    assert "(moco)" in str(error.value)


def test_explicit_format_names_what_is_missing(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(trunk_state(reference_resnet()), path)
    with pytest.raises(
        ForeignCheckpointError,
        match=r"not a moco file: it lacks 'state_dict' keys "
        r"module\.encoder_q\.\*",
    ):
        load_foreign(path, format="moco")
    with pytest.raises(ForeignCheckpointError, match="is a torch file, but --format byol-haiku"):
        load_foreign(path, format="byol-haiku")


def test_wrong_architecture(tmp_path):
    torch.manual_seed(0)
    resnext = torchvision.models.resnext50_32x4d(weights=None)
    path = tmp_path / "resnext50.pth"
    torch.save(resnext.state_dict(), path)
    with pytest.raises(ForeignCheckpointError, match="does not fit any registry architecture") as e:
        load_foreign(path)
    assert "keys with other shapes" in str(e.value)
    resnet18 = tmp_path / "resnet18.pth"
    torch.save(trunk_state(reference_resnet()), resnet18)
    with pytest.raises(ForeignCheckpointError, match=r"does not fit resnet50: .*missing keys"):
        load_foreign(resnet18, arch="resnet50")


def test_unknown_file_lists_every_format(tmp_path):
    text = tmp_path / "weights.txt"
    text.write_text("not a checkpoint\n")
    unknown_dict = tmp_path / "other.pth"
    torch.save({"weights": {"encoder.0.weight": torch.zeros(2)}}, unknown_dict)
    for path in (text, unknown_dict):
        with pytest.raises(ForeignCheckpointError) as error:
            load_foreign(path)
        for fmt in FORMATS:
            assert f"{fmt.name} = {fmt.looks_like}" in str(error.value)


def test_an_incomplete_vit_is_refused_with_its_key_lists(tmp_path):
    vit = {
        "cls_token": torch.zeros(1, 1, 384),
        "pos_embed": torch.zeros(1, 197, 384),
        "patch_embed.proj.weight": torch.zeros(384, 3, 16, 16),
        "blocks.0.attn.qkv.weight": torch.zeros(1152, 384),
    }
    training = {"teacher": prefixed(vit, "backbone."), "student": prefixed(vit, "module.backbone.")}
    for blob in (vit, {**training, "epoch": 1}):
        path = tmp_path / "dino_deitsmall16_pretrain.pth"
        torch.save(blob, path)
        with pytest.raises(
            ForeignCheckpointError, match="does not fit any registry architecture .* missing keys"
        ) as error:
            load_foreign(path)
        assert "blocks.0.norm1.weight" in str(error.value)  # the closest entry: vit_small_patch16


def test_missing_file_and_bad_options(tmp_path):
    with pytest.raises(ForeignCheckpointError, match="does not exist"):
        load_foreign(tmp_path / "nope.pth")
    path = tmp_path / "resnet18.pth"
    torch.save(trunk_state(reference_resnet()), path)
    with pytest.raises(ForeignCheckpointError, match="unknown format 'simclr'"):
        load_foreign(path, format="simclr")
    with pytest.raises(ForeignCheckpointError, match="holds no target"):
        load_foreign(path, network="target")
    stripped_moco = tmp_path / "moco_encoder_q_only.pth.tar"
    torch.save(
        {"state_dict": prefixed(trunk_state(reference_resnet()), "module.encoder_q.")},
        stripped_moco,
    )
    with pytest.raises(ForeignCheckpointError, match="this MoCo file holds no target"):
        load_foreign(stripped_moco, network="target")


def test_release_layout_with_unexpected_content(tmp_path):
    fields = ["online_params", "target_params", "online_state", "target_state", "opt_state"]
    state_type = collections.namedtuple("_ByolExperimentState", fields)
    state_type.__module__ = "byol.byol_experiment"
    path = tmp_path / "pretrain_res50x1.pkl"
    dump_dill_style(path, {"experiment_state": state_type([1, 2], {}, {}, {}, ()), "step": 1})
    with pytest.raises(ForeignCheckpointError, match="layout of byol-haiku but unexpected content"):
        load_foreign(path)
    params = {
        "res_net50/~/initial_conv": {"w": np.zeros((7, 7, 3, 64), "f4")},
        "res_net50/~/mystery_layer": {"w": np.zeros((1, 1, 1, 1), "f4")},
    }
    dump_dill_style(path, {"experiment_state": state_type(params, {}, {}, {}, ()), "step": 1})
    with pytest.raises(ForeignCheckpointError, match="unknown ResNet module 'res_net50/~/mystery"):
        load_foreign(path)
