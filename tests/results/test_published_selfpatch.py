"""SelfPatch's published dense numbers: the README values under our protocol names, their rows in
the dense table beside ours in the same column, and never in a ResNet run's tables."""

import pytest

from results import published_selfpatch, render
from results.published import published_records
from results.record import Task, validate, write_record
from results.tables import build_tables
from tests.results.fixed import fixed_records
from tests.results.fixed import record as make_record

VIT_S = "5a" * 32  # weights_sha256 of "our" DINO ViT-S/16
COCO = Task("detection", "coco", "val2017", "selfpatch-coco-maskrcnn-vit-1x/1")
SEMFPN = Task("segmentation", "ade20k", "val", "selfpatch-ade20k-semfpn-vit-40k/1")
LABEL = "dino-vits16"  # our run's label
UPERNET = Task("segmentation", "ade20k", "val", "selfpatch-ade20k-upernet-vit-160k/1")


def readme_values() -> dict:
    """(method, protocol) -> metrics, as published_records() holds SelfPatch's rows."""
    return {
        (r.checkpoint.method, r.task.protocol): r.metrics
        for r in published_records()
        if r.checkpoint.source == published_selfpatch.PAPER
    }


def test_the_readme_numbers_under_our_protocol_names(tmp_path):
    """detection/README.md and segmentation/README.md of alinlab/SelfPatch (facts sheet, §4)."""
    assert readme_values() == {
        ("dino", COCO.protocol): {"ap": 40.8, "mask_ap": 37.3},
        ("selfpatch", COCO.protocol): {"ap": 42.1, "mask_ap": 38.5},
        ("dino", SEMFPN.protocol): {"miou": 38.3},
        ("selfpatch", SEMFPN.protocol): {"miou": 41.2},
        ("dino", UPERNET.protocol): {"miou": 42.3},
        ("selfpatch", UPERNET.protocol): {"miou": 43.2},
    }
    for record in published_selfpatch.selfpatch_records():
        validate(record)
        write_record(tmp_path, record)  # file-name-safe, unique ids
        assert record.record_id.startswith("published-selfpatch-")
        assert record.checkpoint.arch == "vit_small_patch16"
        assert record.provenance.source.startswith("Yun et al. 2022, SelfPatch")
        assert record.config["table"] in (
            "alinlab/SelfPatch detection/README.md",
            "alinlab/SelfPatch segmentation/README.md",
        )
    assert len(list(tmp_path.iterdir())) == 6
    dino = [r for r in published_selfpatch.selfpatch_records() if r.checkpoint.method == "dino"]
    assert {r.checkpoint.label for r in dino} == {
        "DINO ViT-S/16 (VISSL), as reported by Yun et al. 2022"
    }
    # the metric names our COCO evaluation writes (transfer/detection/coco_eval.py)
    assert published_selfpatch.DETECTION_PROTOCOL == COCO.protocol


def cells(table, label: str) -> dict:
    """{header: (value, status)} of the row whose checkpoint is `label`."""
    (row,) = [r for r in table.values.index if table.rows.loc[r, "checkpoint"] == label]
    return {h: (table.values.loc[row, h], table.status.loc[row, h]) for h in table.headers}


def test_their_rows_and_ours_share_the_protocol_column():
    ours = [
        make_record(
            "10:00:00",
            VIT_S,
            COCO,
            {"ap": 41.0, "ap50": 62.0, "ap75": 44.0, "mask_ap": 37.0},
            label=LABEL,
            arch="vit_small_patch16",
            method="dino",
            epochs=100,
        ),
        make_record(
            "10:00:01",
            VIT_S,
            SEMFPN,
            {"miou": 39.0},
            label=LABEL,
            arch="vit_small_patch16",
            method="dino",
            epochs=100,
        ),
    ]
    (dense,) = [t for t in build_tables(ours) if t.id == "dense"]
    box = "detection coco val2017 AP [selfpatch-coco-maskrcnn-vit-1x/1]"
    mask = "detection coco val2017 mask AP [selfpatch-coco-maskrcnn-vit-1x/1]"
    fpn = "segmentation ade20k val mIoU [selfpatch-ade20k-semfpn-vit-40k/1]"
    assert {box, mask, fpn} <= set(dense.headers)
    assert not any("upernet" in h for h in dense.headers)  # none of ours under UperNet
    dino = cells(dense, "DINO ViT-S/16 (VISSL), as reported by Yun et al. 2022")
    selfpatch = cells(dense, "Yun et al. 2022 (DINO + SelfPatch)")
    mine = cells(dense, LABEL)
    assert (dino[box][0], dino[mask][0], dino[fpn][0]) == (40.8, 37.3, 38.3)
    assert (selfpatch[box][0], selfpatch[mask][0], selfpatch[fpn][0]) == (42.1, 38.5, 41.2)
    assert (mine[box][0], mine[mask][0], mine[fpn][0]) == (41.0, 37.0, 39.0)
    # ours minus the published row of the same method (DINO) and architecture
    (row,) = [r for r in dense.values.index if dense.rows.loc[r, "checkpoint"] == LABEL]
    assert dense.deltas.loc[row, box] == pytest.approx(41.0 - 40.8)
    assert dense.deltas.loc[row, fpn] == pytest.approx(39.0 - 38.3)
    assert "Yun et al. 2022" in dense.title and "BYOL v3 Table 4" in dense.title
    lines = render.to_markdown(dense).splitlines()
    (shown,) = [line for line in lines if "DINO ViT-S/16 (VISSL), as reported by" in line]
    header = next(line for line in lines if line.startswith("| method"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    values = [c.strip() for c in shown.strip("|").split("|")]
    assert values[columns.index(box)] == "40.8" and values[columns.index(fpn)] == "38.3"
    assert values[columns.index("weights")] == "paper" and values[0] == "DINO"
    # every column holds one protocol: a header names exactly one
    assert all(h.count("[") == 1 for h in dense.headers)


def test_a_resnet_run_keeps_the_byol_papers_dense_table():
    (dense,) = [t for t in build_tables(fixed_records()) if t.id == "dense"]
    assert not any("selfpatch" in h for h in dense.headers)
    assert "Yun et al." not in dense.title
    assert not any("Yun et al." in label for label in dense.rows["checkpoint"])
