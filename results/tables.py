"""The paper's tables from result records, ours next to the published rows, with the delta.

    python -m results.tables --records runs/records                  # markdown on stdout
    python -m results.tables --records runs/records --format latex --out paper/tables
    python -m results.tables --records runs/records --table linear --format csv

Records -> results/frame.py (latest complete record per weights, task and seed; several seeds
give mean ± std (n); failed ones stay visible) -> one pandas pivot per table ->
results/render.py (md, LaTeX, CSV, HTML). The published numbers (results/published.py) are
added to whatever the directory holds: the BYOL paper's always, another source's (SelfPatch's
ViT-S/16 dense rows, results/published_selfpatch.py) where one of our records shares its protocol.

Rules the tables keep: a column holds exactly one `task.protocol` (the protocol is in its header, or
the table is one protocol); the cached-feature probe (cached-centercrop/*) never lands in a
byol-paper/* column, a byol-paper/1 record never in a byol-paper/2 column (two readings of the
paper's LR grid, each compared with Table 1's numbers), nor MoCo's detectron2 detection in the
paper's, nor a frozen dense probe (frozen-linear-seg/1, ours: no published number) in the
fine-tune's byol-paper-fcn/1 column. Fine-tune columns go in label-fraction order (1%, 10%, 100%). A
delta is ours minus the paper's row of the same method and architecture in the same column. A table
is printed when it holds at least one of our records (not only published numbers).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from results import published_selfpatch, render
from results.errors import ByolBenchError
from results.frame import records_frame
from results.published import LINEAR_PROTOCOLS, PAPER, TRANSFER_METRICS, published_records
from results.record import METRICS, UNBOUNDED_METRICS, Record, read_records

FORMATS = {"md": "md", "latex": "tex", "csv": "csv"}
FAMILY_NAMES = {"linear": "linear", "knn": "kNN", "semisup": "fine-tune"}
METRIC_NAMES = {
    "top1": "top-1",
    "top5": "top-5",
    "mean_per_class": "mean/class",
    "map11": "mAP",
    "ap50": "AP50",
    "ap": "AP",
    "ap75": "AP75",
    "mask_ap": "mask AP",  # COCO instance segmentation (Mask R-CNN)
    "mask_ap50": "mask AP50",
    "mask_ap75": "mask AP75",
    "miou": "mIoU",
    "delta1": "δ<1.25",
    "delta2": "δ<1.25²",
    "delta3": "δ<1.25³",
    "rms": "rms ↓",
    "rel": "rel ↓",
    "log10": "log10 ↓",
}


# The paper's protocols in its order (1%, 10%, 100% labels, ...); ours sort after them.
PAPER_PROTOCOLS = list(
    dict.fromkeys(record.task.protocol for record in published_records(LINEAR_PROTOCOLS))
)


class ProtocolMixError(ByolBenchError, ValueError):
    """Two protocols would share a table column (docs/protocols.md: mixing them is wrong)."""


@dataclass(frozen=True)
class TableSpec:
    """One kind of table: which families, one table per value of `split_by`, what makes a column.

    Every column key either contains "protocol" or the table is split by it.
    """

    name: str
    title: str  # formatted with the split_by values
    families: tuple[str, ...]
    columns: tuple[str, ...]  # frame fields whose values make one column
    split_by: tuple[str, ...] = ()
    paper_table: str = ""  # cited in the title when the table holds published rows


SPECS = (
    TableSpec(
        "linear",
        "Frozen features, linear probe and kNN: {dataset} ({split})",
        ("linear", "knn"),
        ("family", "protocol", "metric"),
        ("dataset", "split"),
        "Table 1",
    ),
    TableSpec(
        "semisup",
        "Semi-supervised fine-tuning: {dataset} ({split})",
        ("semisup",),
        ("protocol", "metric"),
        ("dataset", "split"),
        "Tables 2 and 8",
    ),
    TableSpec(
        "transfer",
        "Transfer to other classification data sets, protocol {protocol}",
        ("transfer-cls",),
        ("dataset", "split", "metric"),
        ("protocol",),
        "Table 3",
    ),
    TableSpec(
        "dense",
        "Detection, segmentation and depth",
        ("detection", "segmentation", "depth"),
        ("family", "dataset", "split", "protocol", "metric"),
        (),
        "Table 4",
    ),
)


@dataclass
class Table:
    """A built table: descriptor columns per row, then one value column per header."""

    id: str  # file stem: linear-imagenet-val, transfer-byol-transfer-linear-1, dense
    title: str
    rows: pd.DataFrame  # method, architecture, params, epochs, checkpoint, weights
    headers: list[str]
    values: pd.DataFrame  # float, NaN where there is no number; columns = headers
    status: pd.DataFrame  # "complete" | "failed" | "missing" | "unpublished"
    markers: pd.DataFrame  # "" or "†" (unconfirmed published number)
    deltas: pd.DataFrame  # ours - paper, NaN where there is no paper row to compare
    notes: list[str] = field(default_factory=list)
    lows: pd.DataFrame | None = None  # 95% bootstrap interval per cell, NaN where not measured
    highs: pd.DataFrame | None = None
    stds: pd.DataFrame | None = None  # std over the cell's seeds (NaN: one seed)
    counts: pd.DataFrame | None = None  # seeds behind each cell's mean
    show_intervals: bool = False  # --ci: the renderers print [low, high] after each number
    digits: dict[str, int] = field(default_factory=dict)  # header -> decimals (default 1)


def refuse_mixed_protocols(frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
    """Raise ProtocolMixError if any column (rows grouped by `columns`) holds two protocols."""
    if frame.empty:
        return
    protocols = frame.groupby(list(columns))["protocol"].unique()
    for key, names in protocols.items():
        if len(names) > 1:
            raise ProtocolMixError(
                f"column {key} would mix protocols {sorted(names)}; results of different "
                "protocols are not comparable: add 'protocol' to the columns or split by it"
            )


def header(spec: TableSpec, key: dict) -> str:
    """The column's name; it names the protocol unless the whole table is one protocol."""
    metric = METRIC_NAMES.get(key["metric"], key["metric"])
    if spec.name == "transfer":
        return f"{key['dataset']} {metric}"
    parts = [FAMILY_NAMES.get(key.get("family", ""), key.get("family", ""))]
    if "dataset" in key:
        parts += [key["dataset"], key["split"]]
    parts.append(metric)
    text = " ".join(part for part in parts if part)
    return f"{text} [{key['protocol']}]" if "protocol" in key else text


def _column_order(spec: TableSpec, key: dict) -> tuple:
    family = key.get("family", spec.families[0])
    metric_names = METRICS[family][0]
    datasets = list(TRANSFER_METRICS)
    dataset = key.get("dataset", "")
    protocol = key.get("protocol", "")
    return (
        spec.families.index(family),
        datasets.index(dataset) if dataset in datasets else len(datasets),
        dataset,
        PAPER_PROTOCOLS.index(protocol) if protocol in PAPER_PROTOCOLS else len(PAPER_PROTOCOLS),
        _label_fraction(protocol),  # fine-tunes in fraction order: 1% before 10%
        protocol,
        metric_names.index(key["metric"]) if key["metric"] in metric_names else len(metric_names),
    )


def _label_fraction(protocol: str) -> float:
    """The percentage of labels a semisup protocol names (`demo-10pct/1`: 10); others: inf."""
    match = re.search(r"-(\d+(?:\.\d+)?)pct/", protocol)
    return float(match.group(1)) if match else float("inf")


def build_table(spec: TableSpec, frame: pd.DataFrame, group: dict) -> Table:
    """Pivot the long `frame` (already restricted to one table) into a Table."""
    refuse_mixed_protocols(frame, spec.columns + spec.split_by)
    keys = sorted(
        {tuple(row) for row in frame[list(spec.columns)].itertuples(index=False)},
        key=lambda key: _column_order(spec, dict(zip(spec.columns, key))),
    )
    headers = [header(spec, dict(zip(spec.columns, key))) for key in keys]
    if len(set(headers)) < len(headers):  # e.g. one data set under two splits: name it all
        headers = [" ".join(str(value) for value in key) for key in keys]
    column = frame[list(spec.columns)].apply(tuple, axis=1).map(dict(zip(keys, headers)))
    frame = frame.assign(column=column)
    rows = frame.drop_duplicates("row")
    rows = rows.iloc[sorted(range(len(rows)), key=lambda i: rows["order"].iloc[i])]
    order = list(rows["row"])

    def wide(values: str) -> pd.DataFrame:
        table = frame.pivot(index="row", columns="column", values=values)
        return table.reindex(index=order, columns=headers)

    values = wide("value").astype(float)
    published = rows.set_index("row")["kind"] == "published"
    status = wide("status")
    status = status.apply(lambda col: col.fillna(published.map({True: "unpublished"})))
    status = status.fillna("missing")
    markers = wide("marker").fillna("")
    deltas = _deltas(rows.set_index("row"), values)
    notes = sorted(set(frame.loc[frame["note"] != "", "note"]))
    title = spec.title.format(**group)
    if published.any() and spec.paper_table:
        title += f" (paper: BYOL v3 {spec.paper_table}{_other_sources(frame)})"
    table_id = "-".join([spec.name, *[slug(value) for value in group.values()]])
    descriptors = rows.set_index("row")[
        ["method_name", "arch_name", "params", "epochs", "checkpoint", "weights"]
    ].rename(columns={"method_name": "method", "arch_name": "architecture"})
    lows, highs = wide("low").astype(float), wide("high").astype(float)
    stds, counts = wide("std").astype(float), wide("n").astype(float)
    # errors in metres and their ratios (depth's rms, rel) with the paper's three decimals
    metric_of = dict(zip(headers, (dict(zip(spec.columns, key))["metric"] for key in keys)))
    digits = {h: 3 for h, metric in metric_of.items() if metric in UNBOUNDED_METRICS}
    return Table(
        table_id,
        title,
        descriptors,
        headers,
        values,
        status,
        markers,
        deltas,
        notes,
        lows,
        highs,
        stds,
        counts,
        digits=digits,
    )


def _other_sources(frame: pd.DataFrame) -> str:
    """The title's citation of SelfPatch's READMEs when the table holds their rows."""
    theirs = (frame["kind"] == "published") & frame["protocol"].isin(published_selfpatch.PROTOCOLS)
    return f"; ViT-S/16 rows: {published_selfpatch.PAPER}" if theirs.any() else ""


def _deltas(rows: pd.DataFrame, values: pd.DataFrame) -> pd.DataFrame:
    """ours - paper where a published row has the same method and architecture."""
    deltas = pd.DataFrame(float("nan"), index=values.index, columns=values.columns)
    paper = rows[rows["kind"] == "published"]
    for row, info in rows[rows["kind"] != "published"].iterrows():
        match = paper[(paper["method"] == info["method"]) & (paper["arch"] == info["arch"])]
        for reference in match.index:
            deltas.loc[row] = deltas.loc[row].fillna(values.loc[row] - values.loc[reference])
    return deltas


def slug(text: str) -> str:
    """A file-name-safe lower-case form of `text` (table ids)."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", str(text)).strip("-").lower()


def shown_published(records: list[Record]) -> list[Record]:
    """The published records the tables add to `records`: the BYOL paper's, with Table 1's
    numbers under each reading of the linear protocol ours use (/1 always); another source's
    (SelfPatch's) only under a protocol one of ours uses, so a ResNet run's tables keep the
    BYOL paper's layout."""
    ours = {record.task.protocol for record in records if record.task is not None}
    readings = [p for p in LINEAR_PROTOCOLS if p == LINEAR_PROTOCOLS[0] or p in ours]
    return [
        record
        for record in published_records(readings)
        if record.checkpoint.source == PAPER or record.task.protocol in ours
    ]


def build_tables(records: list[Record], specs: tuple[TableSpec, ...] = SPECS) -> list[Table]:
    """Every table of `specs` that holds at least one of our (non-published) records."""
    frame = records_frame([*records, *shown_published(records)])
    tables = []
    for spec in specs:
        part = frame[frame["family"].isin(spec.families)]
        groups = part.groupby(list(spec.split_by), sort=True) if spec.split_by else [((), part)]
        for values, group in groups:
            if (group["kind"] != "published").any():
                values = values if isinstance(values, tuple) else (values,)
                tables.append(build_table(spec, group, dict(zip(spec.split_by, values))))
    return tables


@dataclass(frozen=True)
class TablesConfig:
    """`python -m results.tables`: records -> the paper's tables (see the module docstring)."""

    records: str  # directory of result records (results/record.py)
    format: str = "md"  # md | latex | csv
    out: str | None = None  # write <out>/<table id>.<ext>; default: print to stdout
    tables: tuple[str, ...] = ()  # spec names (linear, semisup, transfer, dense); default: all
    ci: bool = False  # show each number's 95% bootstrap interval where its record has one


def parse_config(argv: list[str] | None) -> TablesConfig:
    parser = argparse.ArgumentParser(
        prog="python -m results.tables",
        description="The BYOL paper's tables from result records, ours next to the paper's.",
        epilog="Cells: the latest complete record per (weights, task, protocol, seed); several "
        "seeds: mean ± std (n=seeds).",
        allow_abbrev=False,
    )
    parser.add_argument("--records", required=True, help="directory of result records")
    parser.add_argument(
        "--format", choices=list(FORMATS), default="md", help="output format (default: md)"
    )
    parser.add_argument("--out", help="write one file per table here (default: stdout)")
    names = [spec.name for spec in SPECS]
    parser.add_argument(
        "--table", nargs="+", choices=names, default=[], help="tables to build (default: all)"
    )
    parser.add_argument(
        "--ci",
        action="store_true",
        help="print each number's 95%% bootstrap interval [low, high] where its record has one "
        "(default: the paper's layout, numbers only)",
    )
    args = parser.parse_args(argv)
    return TablesConfig(args.records, args.format, args.out, tuple(args.table), args.ci)


def write_tables(tables: list[Table], fmt: str, out: str | Path) -> list[Path]:
    """Write each table to `<out>/<id>.<ext>`; returns the paths."""
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for table in tables:
        path = directory / f"{table.id}.{FORMATS[fmt]}"
        path.write_text(render.RENDERERS[fmt](table), encoding="utf-8")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    config = parse_config(argv)
    specs = tuple(spec for spec in SPECS if not config.tables or spec.name in config.tables)
    try:
        tables = build_tables(read_records(config.records), specs)
    except (FileNotFoundError, ByolBenchError) as error:  # no records dir, mixed protocols
        sys.exit(f"error: {error}")
    tables = [dataclasses.replace(table, show_intervals=config.ci) for table in tables]
    if not tables:
        sys.exit(
            f"error: no evaluation records in {config.records} for tables "
            f"{[spec.name for spec in specs]}; run an evaluation (evaluate.linear, ...) first"
        )
    if config.out:
        for path in write_tables(tables, config.format, config.out):
            print(path)
        return
    print("\n".join(render.RENDERERS[config.format](table) for table in tables))


if __name__ == "__main__":
    main()
