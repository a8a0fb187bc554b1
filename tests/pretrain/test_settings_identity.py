"""A settings dataclass in a run's identity: fields added later drop out at their defaults."""

from dataclasses import dataclass

from pretrain.identity import settings_identity
from transfer.depth.protocols import ADDED_FIELDS as DEPTH_ADDED
from transfer.depth.protocols import paper_depth
from transfer.detection.protocols import ADDED_FIELDS as DETECTION_ADDED
from transfer.detection.protocols import PROTOCOLS


@dataclass(frozen=True)
class Settings:
    lr: float = 0.1
    backbone: str = "resnet"  # added later


def test_an_added_field_drops_out_at_its_default_only():
    assert settings_identity(Settings(), ("backbone",)) == {"lr": 0.1}
    assert settings_identity(Settings(backbone="vit"), ("backbone",)) == {
        "lr": 0.1,
        "backbone": "vit",
    }
    assert settings_identity(Settings(), ()) == {"lr": 0.1, "backbone": "resnet"}


def test_resnet_detection_and_depth_identities_hold_no_added_field():
    for name in ("coco-maskrcnn-fpn-1x/1", "byol-paper-frcnn-c4/1"):
        identity = settings_identity(PROTOCOLS[name](), DETECTION_ADDED)
        assert not set(DETECTION_ADDED) & set(identity)
    vit = settings_identity(PROTOCOLS["selfpatch-coco-maskrcnn-vit-1x/1"](), DETECTION_ADDED)
    assert vit["backbone"] == "vit" and vit["optimizer"] == "adamw" and vit["num_heads"] == 8
    assert not set(DEPTH_ADDED) & set(settings_identity(paper_depth(), DEPTH_ADDED))
