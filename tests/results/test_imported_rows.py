"""Rows of imported checkpoints (issue 15, item 5): labelled by method and origin, beside the
paper's rows of their architecture, with the delta against the paper's row of the same method."""

import math

import pytest

from results import render
from results.frame import method_name, records_frame
from results.record import read_records, write_record
from results.tables import build_tables
from tests.results.fixed import (
    DEMO,
    KNN_IN,
    LINEAR_PAPER,
    R50,
    RANDOM_R18,
    fixed_records,
    linear_imagenet_records,
    record,
)

AUTHORS_R50 = "a0" * 32  # the authors' pretrain_res50x1.pkl, imported
MOCO_R50 = "c0" * 32  # MoCo v2, 800 epochs, imported
PAPER_TOP1 = "linear top-1 [byol-paper/1]"


def imported_records() -> list:
    """The authors' BYOL R50 under the paper's linear protocol and kNN; MoCo v2 (no paper row)."""
    authors = dict(
        label="BYOL (authors' release)",
        epochs=None,
        source="imported:byol-haiku",
        path="/data/byol/pretrain_res50x1.pkl",
    )
    moco = dict(
        label="moco-v2 (moco_v2_800ep_pretrain)",
        method="moco-v2",
        epochs=800,
        source="imported:moco",
        path="/data/moco/moco_v2_800ep_pretrain.pth.tar",
    )
    return [
        record("16:00:00", AUTHORS_R50, LINEAR_PAPER, {"top1": 74.6, "top5": 91.9}, **authors),
        record("16:10:00", AUTHORS_R50, KNN_IN, {"top1": 64.9, "top5": 84.0}, **authors),
        record("16:20:00", MOCO_R50, LINEAR_PAPER, {"top1": 71.1, "top5": 90.1}, **moco),
    ]


@pytest.fixture
def linear_table(tmp_path):
    """linear-imagenet-val built from records written to and read back from a records dir."""
    for item in [*linear_imagenet_records(), *imported_records()]:
        write_record(tmp_path, item)
    built = {table.id: table for table in build_tables(read_records(tmp_path))}
    return built["linear-imagenet-val"]


def test_imported_rows_render_beside_the_papers_row_with_the_reproduction_gap(linear_table):
    lines = render.to_markdown(linear_table).splitlines()
    authors = (
        "| BYOL (authors' release) | ResNet-50 | 24M | — | BYOL (authors' release) | a0a0a0a0 | "
        "74.6 (+0.3) | 91.9 (+0.3) | missing | missing | 64.9 | 84.0 |"
    )
    moco = (
        "| MoCo v2 (imported) | ResNet-50 | 24M | 800 | moco-v2 (moco_v2_800ep_pretrain) | "
        "c0c0c0c0 | 71.1 | 90.1 | missing | missing | missing | missing |"
    )
    paper = "| BYOL | ResNet-50 | 24M | 1000 | Grill et al. 2020 | paper | 74.3 | 91.6 |"
    ours = "| BYOL | ResNet-50 | 24M | 1000 | byol-r50-1000ep | 50505050 | 74.1 (-0.2) |"
    first = next(i for i, line in enumerate(lines) if line.startswith(paper))
    assert lines[first + 1] == authors  # right after the paper's R50 row
    assert lines[first + 2] == moco  # no published MoCo row: no delta
    assert lines[first + 3].startswith(ours)  # our pretraining keeps its row and label


def test_delta_per_protocol_against_the_same_method_and_architecture(linear_table):
    deltas = linear_table.deltas
    assert deltas.at[AUTHORS_R50, PAPER_TOP1] == pytest.approx(74.6 - 74.3)
    assert deltas.at[AUTHORS_R50, "linear top-5 [byol-paper/1]"] == pytest.approx(91.9 - 91.6)
    assert deltas.loc[MOCO_R50].isna().all()  # the paper has no MoCo v2 row
    # the paper publishes no kNN number: the authors' kNN cell carries no delta
    assert math.isnan(deltas.at[AUTHORS_R50, "kNN top-1 [knn-cosine-t0.07/1]"])
    assert deltas.at[R50, PAPER_TOP1] == pytest.approx(74.1 - 74.3)


def test_method_names_by_origin():
    def named(**fields) -> str:
        return method_name(record("16:30:00", "e0" * 32, LINEAR_PAPER, {}, error="x", **fields))

    assert named(source="imported:byol-haiku") == "BYOL (authors' release)"
    assert named(method="moco-v3", source="imported:moco-v3") == "MoCo v3 (imported)"
    assert named(method="dino", source="imported:dino") == "DINO (imported)"
    assert named(method="byol", source="imported:solo-learn") == "BYOL (solo-learn)"
    assert named(method=None, source="imported:lightly") == "unknown method (lightly)"
    assert named(method="supervised", source="torchvision") == "supervised (torchvision)"
    assert named(method=None, source="state-dict") == "?"  # a bare state dict, as before
    assert named() == "BYOL"  # our pretraining
    assert named(method="random-init") == "random init"


def test_rows_of_our_runs_and_random_init_keep_their_labels():
    frame = records_frame(fixed_records())
    names = frame.drop_duplicates("row").set_index("row")["method_name"]
    assert names[R50] == "BYOL" and names[DEMO] == "BYOL" and names[RANDOM_R18] == "random init"
