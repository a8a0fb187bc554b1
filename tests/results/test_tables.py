"""Tables from records: golden markdown, selection, deltas, protocol separation, bad metrics."""

import dataclasses
import io
import os
from pathlib import Path

import pandas as pd
import pytest

from results import render, tables
from results.frame import records_frame, select_latest
from results.published import LINEAR_PROTOCOLS, published_records
from results.record import RecordError, Task, write_record
from results.tables import ProtocolMixError, TableSpec, build_table, build_tables
from tests.results import fixed
from tests.results.fixed import DEMO, R50, R50X2, RANDOM_R18, fixed_records
from tests.results.fixed import record as make_record

GOLDEN = Path(__file__).parent / "golden"
EXPECTED_IDS = [
    "linear-fmnist-test",
    "linear-imagenet-val",
    "semisup-imagenet-val",
    "transfer-byol-transfer-linear-1",
    "dense",
]


@pytest.fixture(scope="module")
def built() -> dict:
    return {table.id: table for table in build_tables(fixed_records())}


def test_one_table_per_kind_with_our_records(built):
    assert sorted(built) == sorted(EXPECTED_IDS)  # no finetune transfer table: none of ours


@pytest.mark.parametrize("table_id", EXPECTED_IDS)
def test_tables_equal_golden_markdown(built, table_id):
    """Regenerate after an intended change: UPDATE_GOLDEN=1 pytest tests/results/test_tables.py"""
    text = render.to_markdown(built[table_id])
    path = GOLDEN / f"{table_id}.md"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def test_latest_complete_record_counts():
    chosen = {r.record_id for r in select_latest(fixed_records())}
    assert "20261122T110000Z-linear-" + R50[:8] in chosen  # latest complete
    assert "20261122T100000Z-linear-" + R50[:8] not in chosen  # older complete: superseded
    assert "20261122T120000Z-linear-" + R50[:8] not in chosen  # later failure: complete wins
    assert "20261122T130000Z-linear-" + R50X2[:8] in chosen  # only a failure: it shows
    assert not any("pretrain" in record_id for record_id in chosen)


def test_cells_say_failed_missing_and_unpublished(built):
    table = built["linear-imagenet-val"]
    paper_top1 = "linear top-1 [byol-paper/1]"
    assert table.status.at[R50X2, paper_top1] == "failed"
    assert table.status.at[R50X2, "kNN top-1 [knn-cosine-t0.07/1]"] == "missing"
    published = [row for row in table.rows.index if row.startswith("published:")]
    assert table.status.at[published[0], "kNN top-1 [knn-cosine-t0.07/1]"] == "unpublished"
    assert table.values.at[R50, paper_top1] == 74.1
    demo = built["linear-fmnist-test"]
    assert demo.status.at[RANDOM_R18, "kNN top-1 [knn-cosine-t0.07/1]"] == "failed"
    assert list(demo.rows["checkpoint"]) == ["demo", "random-init resnet18"]
    assert demo.rows.at[DEMO, "method"] == "BYOL"


def test_delta_is_ours_minus_the_papers_row_of_the_same_arch(built):
    table = built["linear-imagenet-val"]
    assert table.deltas.at[R50, "linear top-1 [byol-paper/1]"] == pytest.approx(74.1 - 74.3)
    assert table.deltas.at[R50, "linear top-5 [byol-paper/1]"] == pytest.approx(91.5 - 91.6)
    # no published number under the cached-feature protocol: no delta there
    assert table.deltas[[h for h in table.headers if "cached" in h]].isna().all().all()
    assert built["linear-fmnist-test"].deltas.isna().all().all()


def test_two_protocols_never_share_a_column(built):
    linear = built["linear-imagenet-val"].headers
    assert "linear top-1 [byol-paper/1]" in linear
    assert "linear top-1 [cached-centercrop/1]" in linear
    dense = built["dense"]
    moco = "detection voc07 test AP50 [moco-detectron2-c4-24k/1]"
    paper = "detection voc07 test AP50 [byol-paper-frcnn-c4/1]"
    assert dense.values.at[R50, moco] == 82.0
    assert dense.status.at[R50, paper] == "missing"  # ours is not in the paper's column
    assert dense.deltas[moco].isna().all()


def test_mixing_protocols_is_refused():
    frame_records = [r for r in fixed_records() if r.task and r.task.dataset == "imagenet"]
    from results.frame import records_frame

    frame = records_frame(frame_records)
    frame = frame[frame["family"] == "linear"]
    careless = TableSpec("careless", "linear", ("linear",), ("family", "metric"), ("dataset",))
    with pytest.raises(ProtocolMixError, match="byol-paper/1.*cached-centercrop/1"):
        build_table(careless, frame, {"dataset": "imagenet"})
    with pytest.raises(ProtocolMixError):
        tables.refuse_mixed_protocols(frame, ("metric",))


def test_unknown_metric_name_is_rejected(tmp_path, caplog):
    bad = dataclasses.replace(fixed_records()[1], metrics={"top_1": 74.1, "top5": 91.5})
    with pytest.raises(RecordError, match="metric 'top_1' is not allowed for linear"):
        build_tables([bad])
    with pytest.raises(RecordError, match="top_1"):
        write_record(tmp_path, bad)
    # a file written by other means is reported and skipped by the CLI
    good = fixed_records()[6]
    write_record(tmp_path, good)
    text = (tmp_path / f"{good.record_id}.json").read_text().replace('"top1"', '"acc"')
    (tmp_path / "20261122T999999Z-hand-edited.json").write_text(text)
    out = tmp_path / "out"
    tables.main(["--records", str(tmp_path), "--out", str(out)])
    assert "metric 'acc' is not allowed" in caplog.text
    assert (out / "linear-fmnist-test.md").read_text().count("| BYOL |") == 1


@pytest.mark.parametrize("fmt", ["md", "latex", "csv"])
def test_cli_writes_every_format(tmp_path, capsys, fmt):
    records_dir = tmp_path / "records"
    for record in fixed_records():
        write_record(records_dir, record)
    tables.main(["--records", str(records_dir), "--format", fmt, "--out", str(tmp_path / "t")])
    suffix = tables.FORMATS[fmt]
    written = sorted(path.name for path in (tmp_path / "t").iterdir())
    assert written == sorted(f"{table_id}.{suffix}" for table_id in EXPECTED_IDS)
    assert capsys.readouterr().out.count(f".{suffix}") == len(EXPECTED_IDS)
    text = (tmp_path / "t" / f"linear-imagenet-val.{suffix}").read_text()
    if fmt == "csv":
        frame = pd.read_csv(io.StringIO(text), dtype=str).set_index("weights")
        assert frame.at[R50[:8], "linear top-1 [byol-paper/1]"] == "74.1000"
        assert float(frame.at[R50[:8], "Δ linear top-1 [byol-paper/1]"]) == pytest.approx(-0.2)
        assert frame.at[R50X2[:8], "linear top-1 [byol-paper/1]"] == "failed"
    elif fmt == "latex":
        assert r"\toprule" in text and r"74.1 (-0.2)" in text and r"\textsuperscript{\dag}" in text
    else:
        assert text == (GOLDEN / "linear-imagenet-val.md").read_text(encoding="utf-8")


def test_cli_prints_markdown_and_selects_tables(tmp_path, capsys):
    for record in fixed_records():
        write_record(tmp_path, record)
    tables.main(["--records", str(tmp_path), "--table", "dense"])
    out = capsys.readouterr().out
    assert out.startswith("### Detection, segmentation and depth") and "### Frozen" not in out


def test_cli_explains_empty_or_missing_records_dir(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        tables.main(["--records", str(tmp_path / "nope")])
    with pytest.raises(SystemExit, match="no evaluation records"):
        tables.main(["--records", str(tmp_path)])


def test_paper_v1_and_v2_records_land_in_separate_columns_each_against_table_1():
    """byol-paper/1 (old records) and byol-paper/2 never share a column; Table 1's number is the
    reference of both readings, so each column gets its own delta."""
    v2 = Task("linear", "imagenet", "val", "byol-paper/2")
    ours = [*fixed_records(), make_record("16:00:00", R50, v2, {"top1": 74.5, "top5": 91.7})]
    table = {t.id: t for t in build_tables(ours)}["linear-imagenet-val"]
    v1_top1, v2_top1 = "linear top-1 [byol-paper/1]", "linear top-1 [byol-paper/2]"
    assert table.headers.index(v1_top1) < table.headers.index(v2_top1)
    assert table.values.at[R50, v1_top1] == 74.1 and table.values.at[R50, v2_top1] == 74.5
    assert table.deltas.at[R50, v1_top1] == pytest.approx(74.1 - 74.3)
    assert table.deltas.at[R50, v2_top1] == pytest.approx(74.5 - 74.3)
    assert table.status.at[R50X2, v2_top1] == "missing"  # its /1 failure stays in the /1 column
    frame = records_frame([*ours, *published_records(LINEAR_PROTOCOLS)])
    frame = frame[(frame["family"] == "linear") & (frame["dataset"] == "imagenet")]
    careless = TableSpec("careless", "linear", ("linear",), ("family", "metric"), ("dataset",))
    paper_only = frame[frame["protocol"].str.startswith("byol-paper/")]
    with pytest.raises(ProtocolMixError, match="byol-paper/1.*byol-paper/2"):
        build_table(careless, paper_only, {"dataset": "imagenet"})


def test_fine_tune_columns_go_in_label_fraction_order():
    """Golden: demo-1pct/1 before demo-10pct/1 (a string sort puts 10pct first)."""
    demo = dict(label="demo", arch="resnet18", epochs=4)
    ten = Task("semisup", "fmnist", "test", "demo-10pct/1")
    one = Task("semisup", "fmnist", "test", "demo-1pct/1")
    ours = [
        make_record("17:00:00", DEMO, ten, {"top1": 80.5, "top5": 99.0}, **demo),
        make_record("17:01:00", DEMO, one, {"top1": 62.6, "top5": 95.0}, **demo),
    ]
    (table,) = build_tables(ours)
    assert table.headers == [
        "top-1 [demo-1pct/1]",
        "top-5 [demo-1pct/1]",
        "top-1 [demo-10pct/1]",
        "top-5 [demo-10pct/1]",
    ]
    text = render.to_markdown(table)
    path = GOLDEN / "semisup-fmnist-test.md"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def test_ci_prints_each_numbers_bootstrap_interval_and_says_what_it_is(tmp_path, capsys):
    """--ci: `number [low, high]` where the record has an interval, the legend explains it;
    without --ci the paper's layout is unchanged (the golden tables above)."""
    with_interval = dataclasses.replace(
        fixed.record("10:00:00", fixed.DEMO, fixed.LINEAR_FMNIST, {"top1": 81.25, "top5": 99.0}),
        intervals={"top1": [80.5, 82.0], "top5": [98.75, 99.25]},
    )
    without = fixed.record(
        "10:00:01",
        fixed.RANDOM_R18,
        fixed.LINEAR_FMNIST,
        {"top1": 70.0, "top5": 95.0},
        label="random",
        arch="resnet18",
        method="random-init",
        epochs=None,
    )
    for item in (with_interval, without):
        write_record(tmp_path, item)
    tables.main(["--records", str(tmp_path), "--table", "linear", "--ci"])
    out = capsys.readouterr().out
    assert "| 81.2 [80.5, 82.0] |" in out
    assert "| 70.0 |" in out  # no interval recorded: the number alone
    assert "95% bootstrap interval" in out
    tables.main(["--records", str(tmp_path), "--table", "linear"])
    plain = capsys.readouterr().out
    assert "[80.5" not in plain and "bootstrap" not in plain
    tables.main(["--records", str(tmp_path), "--table", "linear", "--ci", "--format", "csv"])
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out))
    low = [column for column in frame.columns if "top-1" in column and column.endswith(" low")]
    assert len(low) == 1 and sorted(frame[low[0]].fillna(-1)) == [-1, 80.5]
