"""The long frame: parameter counts against the real backbones, names, failed-record metrics."""

import pytest
import torch

from pretrain.backbones import BACKBONES, build_backbone, count_parameters
from results.frame import PARAMS_M, arch_name, records_frame
from tests.results.fixed import R50X2, fixed_records


@pytest.mark.parametrize("arch", sorted(PARAMS_M))
def test_parameter_counts_match_the_backbones(arch):
    """BYOL v3 Table 1 / Table 9 counts (24M, 94M, 375M, 250M), and ours for the rest."""
    assert arch in BACKBONES
    with torch.device("meta"):
        encoder, _ = build_backbone(arch)
    assert round(count_parameters(encoder) / 1e6) == PARAMS_M[arch]


def test_arch_names():
    assert arch_name("resnet50") == "ResNet-50"
    assert arch_name("resnet200x2") == "ResNet-200 (2x)"
    assert arch_name("resnet18:cifar") == "ResNet-18, CIFAR stem"
    assert arch_name("vit_small") == "vit_small"


def test_failed_records_get_the_cells_of_their_family():
    frame = records_frame(fixed_records())
    failed = frame[(frame["row"] == R50X2)]
    assert sorted(failed["metric"]) == ["top1", "top5"] and set(failed["status"]) == {"failed"}
    voc = frame[(frame["dataset"] == "voc2007") & (frame["family"] == "transfer-cls")]
    assert set(voc[voc["kind"] == "eval"]["metric"]) == {"map11"}  # App. D.2's metric for VOC07
    assert frame["value"][frame["status"] == "failed"].isna().all()
