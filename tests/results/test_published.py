"""The BYOL paper's numbers as records: valid, cited, complete, and equal to docs/protocols.md."""

from collections import Counter

import pytest

from results.published import PAPER, TRANSFER_METRICS, published_records
from results.record import validate, write_record


def by_task(family: str, dataset: str, protocol: str, arch: str = "resnet50", method="byol"):
    def key(record):
        task, checkpoint = record.task, record.checkpoint
        return (task.family, task.dataset, task.protocol, checkpoint.arch, checkpoint.method)

    wanted = (family, dataset, protocol, arch, method)
    matches = [record for record in published_records() if key(record) == wanted]
    assert len(matches) == 1, matches
    return matches[0]


def test_every_published_record_is_valid_cited_and_unique(tmp_path):
    everything = published_records()
    assert len({record.record_id for record in everything}) == len(everything)
    records = [record for record in everything if record.checkpoint.source == PAPER]
    assert len(everything) - len(records) == 6  # SelfPatch's (test_published_selfpatch.py)
    # Table 1: 4 archs; Table 2: 4 + 4; Table 8: 1; Table 3: 3 rows x 2 x 12;
    # Table 4: detection 3, segmentation 1, depth 3
    assert len(records) == 4 + 8 + 1 + 72 + 3 + 1 + 3
    assert len({record.record_id for record in records}) == len(records)
    for record in records:
        validate(record)
        assert record.kind == "published" and record.checkpoint.weights_sha256 is None
        assert record.provenance.source == f"{PAPER}, {record.config['table']}"
        write_record(tmp_path, record)  # ids are file-name safe
    assert Counter(record.config["table"] for record in records) == {
        "Table 1": 4,
        "Table 2": 8,
        "Table 8": 1,
        "Table 3": 72,
        "Table 4": 7,
    }


@pytest.mark.parametrize(
    "family, dataset, protocol, arch, metrics",
    [
        ("linear", "imagenet", "byol-paper/1", "resnet50", {"top1": 74.3, "top5": 91.6}),
        ("linear", "imagenet", "byol-paper/1", "resnet50x4", {"top1": 78.6, "top5": 94.2}),
        ("semisup", "imagenet", "byol-paper-1pct/1", "resnet200x2", {"top1": 71.2, "top5": 89.5}),
        ("semisup", "imagenet", "byol-paper-10pct/1", "resnet50", {"top1": 68.8, "top5": 89.0}),
        ("semisup", "imagenet", "byol-paper-100pct/1", "resnet50", {"top1": 77.7, "top5": 93.9}),
        ("transfer-cls", "voc2007", "byol-transfer-linear/1", "resnet50", {"map11": 82.5}),
        (
            "transfer-cls",
            "flowers",
            "byol-transfer-finetune/1",
            "resnet50",
            {"mean_per_class": 97.0},
        ),
        ("transfer-cls", "food101", "byol-transfer-finetune/1", "resnet50", {"top1": 88.5}),
        ("detection", "voc07", "byol-paper-frcnn-c4/1", "resnet50", {"ap50": 77.5}),
        ("segmentation", "voc2012", "byol-paper-fcn/1", "resnet50", {"miou": 76.3}),
        (
            "depth",
            "nyu-v2",
            "byol-paper-depth/1",
            "resnet50",
            {"delta1": 84.6, "delta2": 96.7, "delta3": 99.1, "rms": 0.541, "rel": 0.129},
        ),
    ],
)
def test_values_match_the_protocol_doc(family, dataset, protocol, arch, metrics):
    assert by_task(family, dataset, protocol, arch).metrics == metrics


def test_detection_baselines_and_transfer_metrics():
    supervised = by_task("detection", "voc07", "byol-paper-frcnn-c4/1", method="supervised")
    simclr = by_task("detection", "voc07", "byol-paper-frcnn-c4/1", method="simclr")
    assert (supervised.metrics, simclr.metrics) == ({"ap50": 74.4}, {"ap50": 75.2})
    assert supervised.checkpoint.pretrain_epochs is None
    # App. D.2: mean per-class accuracy for Aircraft, Pets, Caltech-101, Flowers; mAP for VOC07
    assert [name for name, metric in TRANSFER_METRICS.items() if metric != "top1"] == [
        "aircraft",
        "voc2007",
        "pets",
        "caltech101",
        "flowers",
    ]


@pytest.mark.parametrize(
    "method, dataset, protocol, metrics",
    [
        ("simclr", "birdsnap", "byol-transfer-linear/1", {"top1": 42.4}),
        ("simclr", "flowers", "byol-transfer-finetune/1", {"mean_per_class": 96.6}),
        ("supervised", "cifar10", "byol-transfer-linear/1", {"top1": 93.6}),
        ("supervised", "voc2007", "byol-transfer-finetune/1", {"map11": 85.0}),
    ],
)
def test_table_3_baseline_rows(method, dataset, protocol, metrics):
    """Table 3's SimCLR (repro) and Supervised-IN rows, as SimCLR's Table B.5 also lists them."""
    record = by_task("transfer-cls", dataset, protocol, method=method)
    assert record.metrics == metrics and record.config["table"] == "Table 3"


def test_unconfirmed_numbers_stay_marked():
    marked = {
        (record.checkpoint.arch, record.config["table"]): record.config["unconfirmed"]
        for record in published_records()
        if record.config["unconfirmed"]
    }
    assert list(marked) == [("resnet200x2", "Table 1")]
    assert list(marked[("resnet200x2", "Table 1")]) == ["top5"]  # top-1 79.6 agrees
    assert "94.9 in Table 9" in marked[("resnet200x2", "Table 1")]["top5"]
