"""The shared record format: schema checks, atomic one-file-per-record writes, tolerant reads."""

import dataclasses
import json
import logging
import multiprocessing
import subprocess
import sys

import pytest

from results.record import (
    SCHEMA,
    CheckpointRef,
    Provenance,
    Record,
    RecordError,
    Task,
    default_records_dir,
    from_json,
    make_record_id,
    read_records,
    to_json,
    utc_now,
    validate,
    write_record,
)
from tests.conftest import REPO_ROOT

SHA = "3f2a9c1d" + "0" * 56


def make_record(**overrides) -> Record:
    created = utc_now()
    values = dict(
        record_id=make_record_id("linear", "imagenet", created_utc=created),
        kind="eval",
        status="complete",
        created_utc=created,
        checkpoint=CheckpointRef(weights_sha256=SHA, label="byol-r50-1000ep", arch="resnet50"),
        task=Task("linear", "imagenet", "val", "byol-paper/1"),
        metrics={"top1": 74.1, "top5": 91.5},
        selection={"lr": 0.2, "chosen_on": "heldout-10009"},
        config={"epochs": 80},
        provenance=Provenance(git_sha="a1b2c3d", wall_seconds=5123.4),
    )
    return Record(**{**values, **overrides})


def test_round_trip_matches_the_documented_example():
    record = make_record()
    data = json.loads(to_json(record))
    assert list(data)[0] == "schema" and data["schema"] == SCHEMA
    assert set(data) == {
        "schema",
        "record_id",
        "kind",
        "status",
        "created_utc",
        "checkpoint",
        "task",
        "metrics",
        "selection",
        "config",
        "provenance",
        "error",
        "intervals",
        "examples",
    }
    assert from_json(to_json(record)) == record
    assert record.record_id.startswith(record.created_utc.replace("-", "").replace(":", ""))
    assert "-linear-imagenet-" in record.record_id


@pytest.mark.parametrize("where", ["record", "checkpoint", "task", "provenance"])
def test_unknown_keys_are_rejected_at_every_level(where):
    data = json.loads(to_json(make_record()))
    (data if where == "record" else data[where])["surprise"] = 1
    with pytest.raises(RecordError, match="unknown keys.*surprise"):
        from_json(json.dumps(data))


def test_missing_key_and_wrong_schema_are_rejected():
    data = json.loads(to_json(make_record()))
    del data["task"]["protocol"]
    with pytest.raises(RecordError, match="lacks required keys.*protocol"):
        from_json(json.dumps(data))
    data = json.loads(to_json(make_record()))
    data["schema"] = "byol-bench.record/0"
    with pytest.raises(RecordError, match="schema"):
        from_json(json.dumps(data))


@pytest.mark.parametrize(
    "family, metrics",
    [
        ("linear", {"top1": 70.0, "accuracy": 70.0}),  # a name not in the family
        ("linear", {"top1": 70.0}),  # a complete linear record needs top5
        ("knn", {"top1": 70.0, "top5": 90.0, "top200": 1.0}),
        ("detection", {"miou": 50.0}),
        ("segmentation", {"ap50": 50.0}),
        ("transfer-cls", {"top1": 70.0, "map11": 80.0}),  # exactly one per data set
        ("linear", {"top1": 0.741, "top5": float("nan")}),
        ("linear", {"top1": 174.1, "top5": 91.5}),  # a percentage
    ],
)
def test_wrong_metrics_are_rejected(family, metrics):
    record = make_record(task=Task(family, "imagenet", "val", "p/1"), metrics=metrics)
    with pytest.raises(RecordError):
        validate(record)


@pytest.mark.parametrize(
    "family, metrics",
    [
        ("transfer-cls", {"mean_per_class": 88.0}),
        ("detection", {"ap50": 77.5, "ap": 50.1, "ap75": 55.0}),
        ("segmentation", {"miou": 76.3}),
        ("knn", {"top1": 86.9, "top5": 99.0}),
    ],
)
def test_every_family_accepts_its_metric_names(family, metrics):
    validate(make_record(task=Task(family, "x", "test", "p/1"), metrics=metrics))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"kind": "training"}, "kind"),
        ({"status": "done"}, "status"),
        ({"created_utc": "yesterday"}, "created_utc"),
        ({"record_id": "../escape"}, "record_id"),
        ({"status": "failed"}, "error message"),
        ({"error": "boom"}, "only a failed record"),
        ({"kind": "published"}, "cites"),
        ({"task": None}, "needs a task"),
    ],
)
def test_invalid_fields_are_named(overrides, message):
    with pytest.raises(RecordError, match=message):
        validate(make_record(**overrides))


def test_failed_and_published_records():
    validate(make_record(status="failed", metrics={}, error="RuntimeError: out of memory"))
    paper = make_record(
        kind="published",
        checkpoint=CheckpointRef(weights_sha256=None, label="BYOL (paper)", arch="resnet50"),
        provenance=Provenance(source="Grill et al. 2020, Table 1"),
    )
    validate(paper)
    with pytest.raises(RecordError, match="weights_sha256"):
        validate(dataclasses.replace(paper, kind="eval"))


def test_write_is_one_file_per_record_and_never_overwrites(tmp_path):
    record = make_record()
    path = write_record(tmp_path / "records", record)
    assert path == tmp_path / "records" / f"{record.record_id}.json"
    assert [p.name for p in (tmp_path / "records").iterdir()] == [path.name]  # no tmp left
    with pytest.raises(FileExistsError):
        write_record(tmp_path / "records", record)
    with pytest.raises(RecordError):  # invalid records are never written
        write_record(tmp_path / "records", make_record(kind="nonsense"))
    assert read_records(tmp_path / "records") == [record]


def test_read_skips_temp_files_and_reports_invalid_ones(tmp_path, caplog):
    good = make_record()
    write_record(tmp_path, good)
    (tmp_path / f".{make_record().record_id}.123.ab.tmp").write_text('{"half": ')
    (tmp_path / "partial.json.tmp").write_text("{")
    (tmp_path / "broken.json").write_text("{not json")
    bad = json.loads(to_json(make_record()))
    bad["metrics"]["accuracy"] = 1.0
    (tmp_path / "bad-metric.json").write_text(json.dumps(bad))
    with caplog.at_level(logging.WARNING, logger="results.record"):
        assert read_records(tmp_path) == [good]
    warned = caplog.text
    assert "broken.json" in warned and "bad-metric.json" in warned and "accuracy" in warned
    assert ".tmp" not in warned


def _write_many(records_dir, worker: int, count: int) -> None:
    for index in range(count):
        record = make_record(selection={"worker": worker, "index": index})
        write_record(records_dir, record)


def test_32_concurrent_writers_lose_nothing(tmp_path):
    context = multiprocessing.get_context("fork")  # children need only results.record
    writers = [
        context.Process(target=_write_many, args=(tmp_path, worker, 5)) for worker in range(32)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
    assert all(writer.exitcode == 0 for writer in writers)
    records = read_records(tmp_path)
    written = sorted((r.selection["worker"], r.selection["index"]) for r in records)
    assert written == [(w, i) for w in range(32) for i in range(5)]
    assert len(list(tmp_path.iterdir())) == 160  # every record its own file, no temp files left


def test_default_records_dir_is_beside_the_run_dir(tmp_path):
    run_dir = tmp_path / "runs" / "r50"
    (run_dir / "exports").mkdir(parents=True)
    (run_dir / "config.json").write_text("{}")
    export = run_dir / "exports" / "backbone-3f2a9c1d.pt"
    assert default_records_dir(export) == (tmp_path / "runs" / "records").resolve()
    assert str(default_records_dir(tmp_path / "weights.pth")) == "records"
    assert str(default_records_dir(None)) == "records"


def test_record_module_does_not_import_torch():
    code = "import sys, results.record; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)
