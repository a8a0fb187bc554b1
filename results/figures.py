"""The report's plots of a run's training, of a table and of a run's test predictions
(results/report.py embeds them): plain matplotlib Figures from log.jsonl lines
(results/runlog.py), built tables (results/tables.py) and samples files (results/samples.py).
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from results import runlog
from results.samples import IGNORE

DEPTH_COLOURS = "magma"  # one colour map for true and predicted depth; 0 (no measurement): grey

CURVES = (  # (title, log.jsonl keys); step lines and epoch lines (results/runlog.py)
    ("BYOL loss (both directions, summed)", ("loss",)),
    (
        "online probe top-1 (%)",
        ("online_probe_train_top1", "online_probe_test_top1", "online_probe_heldout_top1"),
    ),
    ("learning rate", ("lr",)),
    ("target decay rate tau", ("tau",)),
)


def curves_figure(name: str, lines: list[dict], baseline: float | None = None) -> Figure:
    """Loss, online-probe accuracy, lr and tau of one run against the training step (images
    seen on the top axis): the step lines as curves, the epoch lines as dots; `baseline`, the
    random-init linear probe's top-1 on the run's data set, as a horizontal line."""
    figure = Figure(figsize=(12, 3.0), layout="constrained")
    steps, epochs = runlog.step_lines(lines), runlog.epoch_lines(lines)
    images_per_step = steps[-1]["images_seen"] / steps[-1]["step"] if steps else None
    for index, (title, keys) in enumerate(CURVES):
        axes = figure.add_subplot(1, len(CURVES), index + 1)
        for key in keys:
            for part, style in ((steps, "-"), (epochs, "o")):
                points = [(line["step"], line[key]) for line in part if key in line]
                if points:
                    label = key if part is steps or not any(key in x for x in steps) else None
                    axes.plot(*zip(*points), style, label=label, markersize=3, linewidth=1)
        if baseline is not None and index == 1:
            axes.axhline(baseline, color="grey", linestyle="--", label="random init (linear)")
        axes.set_title(title, fontsize=9)
        axes.set_xlabel("step", fontsize=8)
        axes.tick_params(labelsize=7)
        if images_per_step:
            top = axes.secondary_xaxis(
                "top", functions=(lambda x: x * images_per_step, lambda x: x / images_per_step)
            )
            top.set_xlabel("images seen", fontsize=7)
            top.tick_params(labelsize=6)
        if index == 1:
            axes.legend(fontsize=6)
    figure.suptitle(f"pretraining: {name}", fontsize=10)
    return figure


def curves_alt(name: str, lines: list[dict]) -> str:
    """The curve image's description: how many step and epoch points it draws."""
    steps, epochs = runlog.step_lines(lines), runlog.epoch_lines(lines)
    return (
        f"pretraining curves of {name}: {len(steps)} step points, {len(epochs)} epoch points, "
        f"up to step {max((line['step'] for line in lines), default=0)}"
    )


def bar_figure(table) -> tuple[Figure, str] | None:
    """(figure, alt text) of one table as grouped bars: a group per column, a bar per row that
    has a number there (the paper's rows and ours), with an error bar: the 95% bootstrap
    interval where the record has one, else the std over seeds; None if nothing to draw."""
    headers = percent_headers(table)
    rows = [row for row in table.rows.index if (table.status.loc[row, headers] == "complete").any()]
    if not rows:
        return None
    figure = Figure(figsize=(max(6, 1.2 * len(headers) + 2), 3.6), layout="constrained")
    axes = figure.add_subplot(1, 1, 1)
    width = 0.8 / len(rows)
    described = []
    for index, row in enumerate(rows):
        label = f"{table.rows.at[row, 'method']} ({table.rows.at[row, 'checkpoint']})"
        xs, heights, errors = [], [], [[], []]
        for position, column in enumerate(headers):
            if table.status.at[row, column] != "complete":
                continue
            value = table.values.at[row, column]
            low, high = bar_error(table, row, column)
            xs.append(position + (index - (len(rows) - 1) / 2) * width)
            heights.append(value)
            errors[0].append(value - low)
            errors[1].append(high - value)
        axes.bar(xs, heights, width, yerr=errors, capsize=2, label=label)
        described.append(f"{label}: {len(xs)} bars")
    axes.set_xticks(range(len(headers)), headers, rotation=30, ha="right", fontsize=7)
    axes.set_ylabel("%", fontsize=8)
    left_out = [header for header in table.headers if header not in headers]
    note = f" ({', '.join(left_out)}: in the table only)" if left_out else ""
    axes.set_title(table.title + note, fontsize=9)
    axes.legend(fontsize=6)
    return figure, f"bar chart of {table.id}{note}: " + "; ".join(described)


def percent_headers(table) -> list[str]:
    """The table's columns of percentages, the ones a bar chart's % axis can hold: tables.py
    gives three decimals exactly to the columns of metres and ratios (record.py's
    UNBOUNDED_METRICS: depth's rms, rel, log10), which the bars leave to the table."""
    return [header for header in table.headers if header not in table.digits]


def bar_error(table, row: str, column: str) -> tuple[float, float]:
    """(low, high) of a bar's error bar: the bootstrap interval, else mean ± std, else none."""
    value = table.values.at[row, column]
    if table.lows is not None and not math.isnan(table.lows.at[row, column]):
        return table.lows.at[row, column], table.highs.at[row, column]
    if table.stds is not None and not math.isnan(table.stds.at[row, column]):
        return value - table.stds.at[row, column], value + table.stds.at[row, column]
    return value, value


def voc_palette() -> np.ndarray:
    """[256, 3] uint8 colours of class indices: the PASCAL VOC colour map (each index's bits
    interleaved into R, G, B from the top bit down; VOCdevkit's VOClabelcolormap.m), also used
    for ADE20K's 150 classes; IGNORE (255) is white."""
    palette = np.zeros((256, 3), np.uint8)
    for index in range(256):
        code = index
        for shift in range(7, -1, -1):
            for channel in range(3):
                palette[index, channel] |= ((code >> channel) & 1) << shift
            code >>= 3
    palette[IGNORE] = 255
    return palette


def samples_figure(samples: dict, title: str) -> Figure:
    """k rows of input / truth / prediction (a samples file, results/samples.py). Depth: one
    colour map (DEPTH_COLOURS), the same range for a row's truth and prediction, 0 (no
    measurement, or padding) grey, a colour bar in metres; segmentation: voc_palette()."""
    images, kind = samples["images"], samples["kind"]
    figure = Figure(figsize=(9, 2.4 * len(images) + 0.4), layout="constrained")
    grid = figure.subplots(len(images), 3, squeeze=False)
    colours = colormaps[DEPTH_COLOURS].with_extremes(bad="0.6")
    palette = voc_palette()
    for row, axes in enumerate(grid):
        truth, prediction = samples["truth"][row], samples["prediction"][row]
        axes[0].imshow(images[row])
        if kind == "depth":
            shown = [np.ma.masked_equal(depth, 0) for depth in (truth, prediction)]
            valid = np.concatenate([depth.compressed() for depth in shown])
            low, high = (valid.min(), valid.max()) if valid.size else (0.0, 1.0)
            for axis, depth in zip(axes[1:], shown):
                drawn = axis.imshow(depth, cmap=colours, vmin=low, vmax=high)
            figure.colorbar(drawn, ax=list(axes), shrink=0.8, label="depth (m)")
        else:
            for axis, classes in zip(axes[1:], (truth, prediction)):
                axis.imshow(palette[np.clip(classes, 0, 255)], interpolation="nearest")
        for axis, name in zip(axes, ("input", "truth", "prediction")):
            axis.set_axis_off()
            axis.set_title(f"{name} {row + 1}", fontsize=8)
    figure.suptitle(title, fontsize=10)
    return figure


def samples_alt(samples: dict, title: str) -> str:
    """The picture's description: what it shows, how many images, how it is coloured."""
    count, kind = len(samples["images"]), samples["kind"]
    colours = (
        f"depth in {DEPTH_COLOURS} colours (grey: no measurement)"
        if kind == "depth"
        else "classes in the VOC colour map (white: ignored)"
    )
    return (
        f"{title}: the first {count} test images, each as input, true {kind} and predicted "
        f"{kind} side by side; {colours}"
    )
