"""Accuracy against pretraining epochs (issue 15, item 6): a series of one run's checkpoints, one
curve per (run, task), the random-init baseline of the task and architecture as a line."""

import dataclasses
import html
import re

import pytest

from results import report
from results.record import read_records, write_record
from tests.results.fixed import KNN_FMNIST, LINEAR_FMNIST, record

TITLE = "linear fmnist (test) [cached-centercrop/1]"
ALT = (
    f"top-1 against pretraining epochs, {TITLE}; tiny: 3 points at epochs 1, 2, 3; "
    "random init resnet18: 40.0"
)


def keepers(run_dir: str = "/shared/runs/tiny", label: str = "tiny", digit: str = "1") -> list:
    """Three epoch keepers of a tiny run (checkpoints/epoch_000N.pt) under the linear probe."""
    return [
        record(
            f"1{epoch}:00:00",
            f"{digit}{epoch}" * 32,
            LINEAR_FMNIST,
            {"top1": top1, "top5": 99.0},
            label=label,
            arch="resnet18",
            epochs=epoch,
            path=f"{run_dir}/checkpoints/epoch_{epoch:04d}.pt",
        )
        for epoch, top1 in ((1, 60.0), (2, 65.0), (3, 70.0))
    ]


def random_init(arch: str = "resnet18", top1: float = 40.0, stamp: str = "09:00:00") -> list:
    baseline = dict(label=f"random-init {arch}", arch=arch, method="random-init", epochs=0)
    sha = ("7d" if arch == "resnet18" else "7e") * 32
    return [record(stamp, sha, LINEAR_FMNIST, {"top1": top1, "top5": 90.0}, **baseline)]


@pytest.fixture
def written(tmp_path):
    """The keepers, the resnet18 baseline and a resnet50 one, written and read back."""
    records_dir = tmp_path / "records"
    for item in [*keepers(), *random_init(), *random_init("resnet50", 30.0, "09:30:00")]:
        write_record(records_dir, item)
    return records_dir


def test_three_keepers_make_one_curve_with_the_same_arch_baseline(written):
    curves = report.accuracy_curves(read_records(written))
    assert curves == [
        report.AccuracyCurve(
            dataset="fmnist",
            split="test",
            family="linear",
            protocol="cached-centercrop/1",
            run="tiny",
            arch="resnet18",
            points=((1, 60.0), (2, 65.0), (3, 70.0)),
            baseline=40.0,
        )
    ]
    assert report.accuracy_series(read_records(written)) == {
        ("fmnist", "test", "linear", "cached-centercrop/1", "tiny"): [(1, 60), (2, 65), (3, 70)]
    }


def test_no_curve_from_one_epoch_and_no_baseline_from_another_task():
    assert report.accuracy_curves([*keepers()[:1], *random_init()]) == []
    knn_baseline = [dataclasses.replace(item, task=KNN_FMNIST) for item in random_init()]
    (curve,) = report.accuracy_curves([*keepers(), *knn_baseline])
    assert curve.baseline is None and len(curve.points) == 3


def test_two_runs_under_one_label_are_two_curves():
    records = [*keepers("/a/tiny"), *keepers("/b/tiny", digit="2")]
    runs = [curve.run for curve in report.accuracy_curves(records)]
    assert runs == ["tiny (/a/tiny)", "tiny (/b/tiny)"]


def test_figure_draws_the_points_and_the_baseline_line(written):
    ((figure, alt),) = report.accuracy_figures(read_records(written))
    assert alt == ALT
    (axes,) = figure.axes
    assert axes.get_title() == TITLE
    curve, baseline = axes.get_lines()
    assert list(curve.get_xdata()) == [1, 2, 3] and list(curve.get_ydata()) == [60, 65, 70]
    assert list(baseline.get_ydata()) == [40.0, 40.0] and baseline.get_linestyle() == "--"
    assert baseline.get_label() == "random init resnet18: 40.0"


def test_report_embeds_the_series_plot(written, tmp_path):
    out = tmp_path / "report.html"
    report.main(["--records", str(written), "--out", str(out)])
    text = out.read_text(encoding="utf-8")
    images = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,', text)
    curves = [alt for alt in images if not alt.startswith("bar chart of")]  # one per table
    assert curves == [html.escape(ALT)]
    assert "Each run has one evaluated checkpoint so far" not in text
