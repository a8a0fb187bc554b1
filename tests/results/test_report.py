"""The HTML report: self-contained, with tables, curves, accuracy vs epochs and provenance; and it
renders in a real browser (headless Chromium, marked slow)."""

import dataclasses
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from results import figures, report
from results.record import read_records, write_record
from results.tables import build_tables
from tests.results.fixed import LINEAR_FMNIST, fixed_records, record

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
C0_BLUE = (31, 119, 180)  # matplotlib's first line colour: the plots were drawn


@pytest.fixture
def report_inputs(tmp_path):
    """Records (fixed set + the demo run evaluated at epochs 1, 2 and 4) and three run dirs (two
    with epoch lines only, one one-epoch run with step lines)."""
    records_dir = tmp_path / "records"
    checkpoints = [("1" * 64, 1, 70.5), ("2" * 64, 2, 79.0)]
    extra = [
        record(
            f"16:0{epochs}:00",
            sha,
            LINEAR_FMNIST,
            {"top1": top1, "top5": 98.0},
            label="demo",
            arch="resnet18",
            epochs=epochs,
        )
        for sha, epochs, top1 in checkpoints
    ]
    for item in [*fixed_records(), *extra]:
        write_record(records_dir, item)
    runs = tmp_path / "runs"
    for name, epochs in (("demo", 4), ("other", 30)):
        (runs / name).mkdir(parents=True)
        lines = [
            {
                "epoch": epoch,
                "step": 100 * epoch,
                "loss": 3.5 / epoch,
                "lr": 0.1 / epoch,
                "tau": 0.99 + 0.002 * epoch / epochs,
                "online_probe_train_top1": 50 + epoch,
                "online_probe_test_top1": 48 + epoch,
                "img_per_s": 200.0,
            }
            for epoch in range(1, epochs + 1)
        ]
        (runs / name / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    write_one_epoch_run(runs / "short")
    return records_dir, runs


def write_one_epoch_run(run_dir):
    """A one-epoch run on fmnist as pretrain/train.py logs it: a step line every 5 of its 100
    steps (some with the held-out probe), steps 40-50 logged twice (a resume), an epoch line."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"dataset": "fmnist", "batch_size": 128}))
    lines = []
    for step in [*range(5, 55, 5), *range(40, 105, 5)]:
        line = {"kind": "step", "step": step, "epoch": step / 100, "images_seen": 128 * step}
        line.update(loss=4.0 - step / 50, lr=0.01 * step, tau=0.99, img_per_s=600.0)
        if step % 50 == 0:
            line["online_probe_heldout_top1"] = 40.0 + step / 5
        lines.append(line)
    lines.append(
        {"epoch": 1, "step": 100, "loss": 2.5, "lr": 1.0, "tau": 0.99, "img_per_s": 600.0}
        | {"online_probe_train_top1": 55.0, "online_probe_test_top1": 57.0}
    )
    (run_dir / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_report_is_self_contained_with_every_section(report_inputs, tmp_path, capsys):
    records_dir, runs = report_inputs
    out = tmp_path / "report.html"
    report.main(["--records", str(records_dir), "--runs", str(runs), "--out", str(out)])
    assert capsys.readouterr().out.strip() == f"report: {out.resolve()}"
    text = out.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", text)  # nothing external
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    tables = build_tables(read_records(records_dir))
    # a bar chart per table, curves of three runs, accuracy vs epochs (fmnist)
    assert len(images) == len(tables) + 3 + 1
    # the semi-supervised table's 3 seeds: our two bars carry their std as error bars
    assert "bar chart of semisup-imagenet-val: BYOL (Grill et al. 2020): 6 bars; " in text
    assert "BYOL (byol-r50-1000ep): 2 bars" in text
    # the one-epoch run draws a curve, not a dot: 20 step points (a resumed step counted once)
    assert 'alt="pretraining curves of short: 20 step points, 1 epoch points' in text
    for table_id in ("linear-imagenet-val", "linear-fmnist-test", "dense"):
        assert f"id='{table_id}'" in text
    for item in fixed_records():
        assert item.record_id in text  # provenance of every record, superseded ones included
    assert "(superseded)" in text and "RuntimeError: node lost" in text
    assert "published-byol-v3" not in text  # the paper's numbers are in the tables only


def test_accuracy_against_epochs_needs_two_checkpoints_of_a_run():
    records = fixed_records()
    assert report.accuracy_series(records) == {}
    more = dataclasses.replace(
        records[6],
        record_id="20261122T170000Z-linear-demo-early",
        created_utc="2026-11-22T17:00:00Z",
        checkpoint=dataclasses.replace(
            records[6].checkpoint, weights_sha256="3" * 64, pretrain_epochs=2
        ),
        metrics={"top1": 80.0, "top5": 99.0},
    )
    series = report.accuracy_series([*records, more])
    assert series == {
        ("fmnist", "test", "linear", "cached-centercrop/1", "demo"): [(2, 80.0), (4, 84.61)]
    }


def test_missing_runs_dir_is_explained(report_inputs, tmp_path):
    records_dir, _ = report_inputs
    with pytest.raises(SystemExit, match="is not a directory"):
        report.main(["--records", str(records_dir), "--runs", str(tmp_path / "nope")])


@pytest.mark.slow
def test_report_renders_in_headless_chromium(report_inputs, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        message = "chromium is not installed: apt-get install chromium (CI installs it)"
        if os.geteuid() != 0:
            pytest.skip(message)
        pytest.fail(message)
    records_dir, runs = report_inputs
    out = tmp_path / "report.html"
    report.main(["--records", str(records_dir), "--runs", str(runs), "--out", str(out)])
    shot = tmp_path / "shot.png"
    result = subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1400,3000",
            f"--screenshot={shot}",
            out.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.is_file(), f"no screenshot (exit {result.returncode}):\n{result.stderr[-3000:]}"
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)  # [H, W, 3]
    assert pixels.shape == (3000, 1400, 3)
    ink = int((pixels.min(axis=2) < 200).sum())
    assert ink > 0.02 * 3000 * 1400, f"the page looks blank ({ink} dark pixels)"
    blue = int((np.abs(pixels - np.array(C0_BLUE)).max(axis=2) < 40).sum())
    assert blue > 200, f"no plot lines on the page ({blue} blue pixels)"


def test_the_random_init_linear_probe_is_the_curves_baseline(report_inputs):
    records_dir, runs = report_inputs
    records = [*fixed_records()]
    assert report.random_init_baseline(records, runs / "short") == 78.05  # fmnist, random init
    assert report.random_init_baseline(records, runs / "demo") is None  # no config.json


def test_bar_errors_are_the_interval_else_the_std_over_seeds():
    with_interval = dataclasses.replace(
        record("16:00:00", "4" * 64, LINEAR_FMNIST, {"top1": 81.0, "top5": 99.0}, label="x"),
        intervals={"top1": [80.0, 82.5], "top5": [98.5, 99.5]},
    )
    tables = {table.id: table for table in build_tables([*fixed_records(), with_interval])}
    fmnist = tables["linear-fmnist-test"]
    row = next(row for row in fmnist.rows.index if fmnist.rows.at[row, "checkpoint"] == "x")
    assert figures.bar_error(fmnist, row, fmnist.headers[0]) == (80.0, 82.5)
    semisup = tables["semisup-imagenet-val"]
    ours = next(row for row in semisup.rows.index if semisup.rows.at[row, "weights"] != "paper")
    assert figures.bar_error(semisup, ours, semisup.headers[0]) == pytest.approx((53.0, 55.0))
    paper = next(row for row in semisup.rows.index if semisup.rows.at[row, "weights"] == "paper")
    assert figures.bar_error(semisup, paper, semisup.headers[0]) == (53.2, 53.2)  # no error bar
