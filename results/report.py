"""One self-contained HTML report: tables, bar charts, curves, accuracy vs epochs, provenance.

    python -m results.report --records runs/records --runs runs/demo --out runs/demo/report.html
    python -m results.report --records /shared/runs/records --runs /shared/runs

Everything is in the one file (inline CSS, plots as base64 PNGs), so it can be mailed or attached.
Sources: the tables come from the records (results/tables.py), the curves from each run's
log.jsonl (results/runlog.py: a line every log_every_steps steps and one per epoch; plotted
against steps and images seen, the random-init linear probe as a line), accuracy vs
pretraining epochs from eval records of several checkpoints of one run (same label, task and
protocol; one curve per run and task, the random-init baseline of the task as a line:
AccuracyCurve), the predictions of dense tasks as pictures (the latest complete record per
protocol and data set whose selection names a samples file, results/samples.py: input, truth and
prediction of its first test images side by side; a missing or changed file is a note), and the
provenance view lists every record, superseded and failed ones included.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display; must precede any other matplotlib import
from matplotlib.figure import Figure  # noqa: E402

from results import render, runlog  # noqa: E402
from results.errors import ByolBenchError  # noqa: E402
from results.figures import (  # noqa: E402
    bar_figure,
    curves_alt,
    curves_figure,
    samples_alt,
    samples_figure,
)
from results.frame import select_latest  # noqa: E402
from results.record import Record, read_records, to_dict, utc_now  # noqa: E402
from results.samples import SamplesError, load_recorded  # noqa: E402
from results.tables import build_tables  # noqa: E402

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
h1{font-size:1.6em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .5em;vertical-align:top}
th{background:#eef} caption{font-weight:bold;text-align:left;padding:.3em 0}
td.num,td.failed,td.missing,td.unpublished{text-align:right;font-variant-numeric:tabular-nums}
td.failed{color:#b00;font-weight:bold} td.missing{color:#b60} td.unpublished{color:#999}
.scroll{overflow-x:auto}
.legend{font-size:.8em;color:#555;margin:.2em 0} img{max-width:100%;border:1px solid #eee}
code,.mono{font-family:ui-monospace,monospace;font-size:.85em;word-break:break-all}
tr.superseded{color:#888} tr.failed{background:#fee} p.note{color:#b60}
"""


def png(figure: Figure, alt: str = "plot") -> str:
    """An <img> tag holding `figure` as an embedded PNG, described by `alt`."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def read_logs(runs: Path | None) -> dict[str, list[dict]]:
    """{run name: log.jsonl lines (runlog.read_log)} for `runs` itself and each run directory
    directly in it."""
    if runs is None:
        return {}
    logs = {}
    for path in sorted([runs / "log.jsonl", *runs.glob("*/log.jsonl")]):
        if path.is_file():
            logs[path.parent.name] = runlog.read_log(path)
    return logs


def random_init_baseline(records: list[Record], run_dir: Path) -> float | None:
    """The random-init linear probe's top-1 on the data set the run in `run_dir` pretrained on
    (its config.json), from the latest such record; None when there is none."""
    config = run_dir / "config.json"
    if not config.is_file():
        return None
    dataset = json.loads(config.read_text(encoding="utf-8")).get("dataset")
    found = [
        record
        for record in select_latest(records)
        if record.status == "complete"
        and record.checkpoint.method == "random-init"
        and record.task.family == "linear"
        and record.task.dataset == dataset
    ]
    return found[-1].metrics["top1"] if found else None


@dataclass(frozen=True)
class AccuracyCurve:
    """Top-1 of one run's checkpoints under one task, against their pretraining epochs, and the
    task's random-init baseline of the same architecture (None when not evaluated).

    A run is the checkpoint label: pretraining labels its exports and its epoch keepers with the
    run directory's name (pretrain/train.py export metadata, evaluate/features.py for training
    checkpoints), and `--label` groups any other files. Two run directories under one label (read
    from `checkpoint.path`, <run>/exports|checkpoints/<file>) are told apart by their path.
    """

    dataset: str
    split: str
    family: str
    protocol: str
    run: str
    arch: str
    points: tuple[tuple[float, float], ...]  # (pretrain epochs, top-1), by epochs
    baseline: float | None = None

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.dataset, self.split, self.family, self.protocol, self.run)

    @property
    def task_title(self) -> str:
        return f"{self.family} {self.dataset} ({self.split}) [{self.protocol}]"


def run_dir_of(path: str | None) -> str | None:
    """The run directory of an export or training checkpoint path, else None."""
    if not path:
        return None
    parent = Path(path).parent
    return str(parent.parent) if parent.name in ("exports", "checkpoints") else None


def _top1_records(records: list[Record]) -> list[Record]:
    """The counting (select_latest) complete eval records with a top-1."""
    return [
        record
        for record in select_latest(records)
        if record.kind == "eval" and record.status == "complete" and "top1" in record.metrics
    ]


def random_init_baselines(records: list[Record]) -> dict[tuple, float]:
    """{(dataset, split, family, protocol, arch): top-1} of the latest random-init record."""
    baselines = {}
    counted = sorted(_top1_records(records), key=lambda r: (r.created_utc, r.record_id))
    for record in counted:
        if record.checkpoint.method == "random-init":
            task = record.task
            key = (task.dataset, task.split, task.family, task.protocol, record.checkpoint.arch)
            baselines[key] = record.metrics["top1"]
    return baselines


def accuracy_curves(records: list[Record]) -> list[AccuracyCurve]:
    """One AccuracyCurve per (run, task) whose checkpoints span at least two pretraining epochs
    (see AccuracyCurve for what a run is), with the random-init baseline of the task and arch."""
    groups: dict[tuple, list[tuple[float, float]]] = {}
    for record in _top1_records(records):
        checkpoint, task = record.checkpoint, record.task
        if checkpoint.pretrain_epochs is None or checkpoint.method == "random-init":
            continue
        run = (checkpoint.label, run_dir_of(checkpoint.path), checkpoint.arch)
        key = (task.dataset, task.split, task.family, task.protocol, *run)
        groups.setdefault(key, []).append((checkpoint.pretrain_epochs, record.metrics["top1"]))
    dirs: dict[str, set] = {}
    for *_, label, run_dir, _ in groups:
        dirs.setdefault(label, set()).add(run_dir)
    baselines = random_init_baselines(records)
    curves = []
    for key in sorted(groups, key=str):
        *task, label, run_dir, arch = key
        points = groups[key]
        if len({epochs for epochs, _ in points}) < 2:
            continue
        run = label if len(dirs[label]) == 1 else f"{label} ({run_dir or 'no path'})"
        baseline = baselines.get((*task, arch))
        curves.append(AccuracyCurve(*task, run, arch, tuple(sorted(points)), baseline))
    return curves


def accuracy_series(records: list[Record]) -> dict[tuple, list[tuple[float, float]]]:
    """{(dataset, split, family, protocol, run): [(pretrain epochs, top-1)]}, >= 2 epochs."""
    return {curve.key: list(curve.points) for curve in accuracy_curves(records)}


def curve_alt(curves: list[AccuracyCurve]) -> str:
    """The alt text of one task's figure: its title, each run's points, the baselines."""
    lines = [
        f"{curve.run}: {len(curve.points)} points at epochs "
        + ", ".join(f"{epochs:g}" for epochs, _ in curve.points)
        for curve in curves
    ]
    baselines = {(curve.arch, curve.baseline) for curve in curves if curve.baseline is not None}
    lines += [f"random init {arch}: {value:.1f}" for arch, value in sorted(baselines)]
    return f"top-1 against pretraining epochs, {curves[0].task_title}; " + "; ".join(lines)


def accuracy_figures(records: list[Record]) -> list[tuple[Figure, str]]:
    """(figure, alt text) per task: top-1 against pretraining epochs, a curve per run, and the
    random-init baseline of each architecture as a dashed horizontal line."""
    by_task: dict[str, list[AccuracyCurve]] = {}
    for curve in accuracy_curves(records):
        by_task.setdefault(curve.task_title, []).append(curve)
    figures = []
    for title, curves in sorted(by_task.items()):
        figure = Figure(figsize=(6, 3.5), layout="constrained")
        axes = figure.add_subplot(1, 1, 1)
        for curve in curves:
            axes.plot(*zip(*curve.points), "o-", label=curve.run)
        drawn = {(curve.arch, curve.baseline) for curve in curves if curve.baseline is not None}
        for arch, value in sorted(drawn):
            label = f"random init {arch}: {value:.1f}"
            axes.axhline(value, linestyle="--", color="0.4", label=label)
        axes.set(xlabel="pretraining epochs", ylabel="top-1 (%)", title=title)
        axes.title.set_fontsize(9)
        axes.legend(fontsize=7)
        figures.append((figure, curve_alt(curves)))
    return figures


def prediction_records(records: list[Record]) -> list[Record]:
    """The latest complete eval record per (protocol, data set) whose selection names a samples
    file (results/samples.py), in (protocol, data set) order."""
    latest = {}
    for record in sorted(records, key=lambda r: (r.created_utc, r.record_id)):
        if record.kind == "eval" and record.status == "complete" and "samples" in record.selection:
            latest[(record.task.protocol, record.task.dataset)] = record
    return [latest[key] for key in sorted(latest)]


def prediction_pictures(records: list[Record]) -> list[str]:
    """Per prediction_records: an <img> of its first test images (input / truth / prediction),
    or a note saying why it is left out (the file is missing, changed or unreadable)."""
    parts = []
    for record in prediction_records(records):
        task = record.task
        title = (
            f"{task.protocol} on {task.dataset} ({task.split}), "
            f"checkpoint {record.checkpoint.label}"
        )
        try:
            samples = load_recorded(record.selection["samples"])
        except SamplesError as error:
            note = f"Predictions of {title} left out: {error}."
            parts.append(f"<p class='note'>{html.escape(note)}</p>")
            continue
        parts.append(png(samples_figure(samples, title), samples_alt(samples, title)))
    return parts


def provenance_rows(records: list[Record]) -> str:
    """One table row per record (newest first) and its full JSON on demand."""
    counted = {record.record_id for record in select_latest(records)}
    rows = []
    for record in sorted(records, key=lambda r: (r.created_utc, r.record_id), reverse=True):
        checkpoint, task, origin = record.checkpoint, record.task, record.provenance
        state = "failed" if record.status == "failed" else ""
        state = state or ("" if record.record_id in counted else "superseded")
        metrics = ", ".join(f"{name} {value:.2f}" for name, value in record.metrics.items())
        cells = [
            f"<span class='mono'>{record.record_id}</span>",
            record.created_utc,
            f"{record.kind} / {record.status}" + (" (superseded)" if state == "superseded" else ""),
            f"{checkpoint.label} ({checkpoint.arch}, {(checkpoint.weights_sha256 or '-')[:8]})",
            f"{task.family} {task.dataset}/{task.split} {task.protocol}" if task else "-",
            metrics or (record.error or "-"),
            f"{origin.git_sha or '-'}{' (dirty)' if origin.git_dirty else ''}",
            f"{origin.device or '-'}, {origin.wall_seconds or '-'} s"
            + (f", SLURM job {origin.slurm_job_id}" if origin.slurm_job_id else "")
            + (f" on {origin.slurm_nodes}" if origin.slurm_nodes else ""),
            f"<span class='mono'>{html.escape(origin.command or '-')}</span>",
        ]
        full = html.escape(json.dumps(to_dict(record), indent=1))
        cells.append(f"<details><summary>JSON</summary><pre class='mono'>{full}</pre></details>")
        text = [cell if i in (0, 8, 9) else html.escape(cell) for i, cell in enumerate(cells)]
        rows.append(f"<tr class='{state}'>" + "".join(f"<td>{c}</td>" for c in text) + "</tr>")
    names = "record created kind/status weights task result git device/time command record"
    head = "".join(f"<th>{name}</th>" for name in names.split())
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def run_path(runs: Path, name: str) -> Path:
    """The run directory read_logs named `name`: `runs` itself or a directory in it."""
    return runs if runs.name == name and (runs / "log.jsonl").is_file() else runs / name


def build_report(records: list[Record], runs: Path | None, title: str) -> str:
    """The whole HTML document."""
    tables = build_tables(records)
    logs = read_logs(runs)
    accuracy = accuracy_figures(records)
    predictions = prediction_pictures(records)
    ours = [record for record in records if record.kind != "published"]
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Generated {utc_now()} from {len(ours)} records; runs: {html.escape(str(runs))}.</p>",
        "<h2>Tables</h2>",
        *(render.to_html(table) for table in tables),
        "" if tables else "<p>No evaluation records yet.</p>",
        "<h2>Bar charts (error bars: 95% bootstrap interval, else std over seeds)</h2>",
        *(png(*bars) for bars in (bar_figure(table) for table in tables) if bars),
        "<h2>Predictions (the first test images: input, truth, prediction)</h2>",
        *predictions,
        ""
        if predictions
        else "<p>No record names sample predictions (segmentation and depth runs keep them).</p>",
        "<h2>Pretraining curves (log.jsonl)</h2>",
        *(
            png(
                curves_figure(name, lines, random_init_baseline(records, run_path(runs, name))),
                curves_alt(name, lines),
            )
            for name, lines in logs.items()
            if lines
        ),
        "" if logs else "<p>No log.jsonl under --runs.</p>",
        "<h2>Accuracy against pretraining epochs</h2>",
        *(png(figure, alt) for figure, alt in accuracy),
        ""
        if accuracy
        else "<p>Each run has one evaluated checkpoint so far: evaluate its "
        "checkpoints/epoch_XXXX.pt files (same task) to see this curve.</p>",
        "<h2>Provenance of every record</h2>",
        provenance_rows(ours) if ours else "<p>No records.</p>",
    ]
    body = "\n".join(section for section in sections if section)
    return (
        f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


@dataclass(frozen=True)
class ReportConfig:
    """`python -m results.report`: records (+ run dirs) -> one self-contained HTML file."""

    records: str  # directory of result records
    runs: str | None = None  # a run dir, or a directory of run dirs (their log.jsonl)
    out: str | None = None  # default: report.html beside the records directory
    title: str = "byol-bench report"


def parse_config(argv: list[str] | None) -> ReportConfig:
    parser = argparse.ArgumentParser(
        prog="python -m results.report",
        description="One self-contained HTML report: tables, curves, provenance.",
        allow_abbrev=False,
    )
    parser.add_argument("--records", required=True, help="directory of result records")
    parser.add_argument("--runs", help="a run directory, or a directory of run directories")
    parser.add_argument("--out", help="HTML file (default: report.html beside --records)")
    parser.add_argument(
        "--title", default=ReportConfig.title, help=f"page title (default: {ReportConfig.title})"
    )
    args = parser.parse_args(argv)
    return ReportConfig(args.records, args.runs, args.out, args.title)


def write_report(config: ReportConfig) -> Path:
    """Build the report of `config` and write it; returns its path."""
    records = read_records(config.records)
    runs = Path(config.runs) if config.runs else None
    if runs is not None and not runs.is_dir():
        raise FileNotFoundError(f"--runs {runs} is not a directory; pass a run dir or runs root")
    out = Path(config.out) if config.out else Path(config.records).parent / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_report(records, runs, config.title), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> None:
    config = parse_config(argv)
    try:
        path = write_report(config)
    except (FileNotFoundError, ByolBenchError) as error:  # no records dir, mixed protocols
        sys.exit(f"error: {error}")
    print(f"report: {path.resolve()}")


if __name__ == "__main__":
    main()
