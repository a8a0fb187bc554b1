"""Records -> one long pandas frame, one row per (selected record, metric): what tables pivot.

Selection (docs/architecture.md, "Data flow"): per (weights, task.family, task.dataset, task.split,
task.protocol) the latest complete record counts; when none is complete, the latest failed one
does, and its cells say "failed". Weights are identified by `checkpoint.weights_sha256` (never by
path or label); a published number, which has no weights, by its method, arch and label.

Rows of foreign weights (issue 15, item 5): a record whose `checkpoint.source` is
"imported:<format>" (evaluate/importers/load.py) or names another origin (e.g. "torchvision")
together with a method is labelled by method and origin, "BYOL (authors' release)",
"MoCo v2 (imported)", and sorts right after the paper's rows of its architecture, so the
"ours minus paper" delta (results/tables.py) reads as the reproduction gap of that release.
"""

from __future__ import annotations

import pandas as pd

from results.published import TRANSFER_METRICS, published_records
from results.record import METRICS, Record, validate

# Parameter counts of the backbones (millions, no classifier). BYOL v3, Table 1 for the wide ones
# (R50 2x 94M, R50 4x 375M, R200 2x 250M) and Table 9 for R50 (24M); the others are counted from
# pretrain/backbones.py (tests/results/test_frame.py checks every entry against it).
PARAMS_M = {
    "resnet18": 11,
    "resnet34": 21,
    "resnet50": 24,
    "resnet50x2": 94,
    "resnet50x4": 375,
    "resnet101": 43,
    "resnet152": 58,
    "resnet200": 63,
    "resnet200x2": 250,
}
METHOD_NAMES = {  # checkpoint.method -> display name; the importers' and solo-learn's names too
    "byol": "BYOL",
    "random-init": "random init",
    "simclr": "SimCLR",
    "moco-v1": "MoCo v1",
    "moco-v2": "MoCo v2",
    "mocov2plus": "MoCo v2+",
    "moco-v3": "MoCo v3",
    "mocov3": "MoCo v3",
    "dino": "DINO",
    "selfpatch": "SelfPatch",
    "swav": "SwAV",
    "deepclusterv2": "DeepCluster-v2",
    "barlow_twins": "Barlow Twins",
    "vicreg": "VICReg",
    "simsiam": "SimSiam",
    "nnclr": "NNCLR",
}
# The origin a row of imported weights names, by importer format (evaluate/importers/formats.py);
# a format not listed is "imported". byol-haiku is the file format of the authors' release only.
ORIGINS = {
    "byol-haiku": "authors' release",
    "solo-learn": "solo-learn",
    "lightly": "lightly",
    "mmselfsup": "mmselfsup",
    "vissl": "VISSL",
}
IMPORTED_PREFIX = "imported:"
OWN_SOURCES = (None, "byol-bench", "random-init")  # rows of our pretraining and baselines
METHOD_ORDER = ("byol", "simclr", "supervised", "random-init")
COLUMNS = (
    "row",
    "order",
    "kind",
    "method",
    "arch",
    "method_name",
    "arch_name",
    "params",
    "epochs",
    "checkpoint",
    "weights",
    "family",
    "dataset",
    "split",
    "protocol",
    "metric",
    "value",
    "low",
    "high",
    "std",
    "n",
    "status",
    "marker",
    "note",
    "record_id",
    "created_utc",
)


def row_key(record: Record) -> str:
    """The identity of a table row: the weights, or (method, arch, label) for a published number."""
    checkpoint = record.checkpoint
    if checkpoint.weights_sha256:
        return checkpoint.weights_sha256
    return f"published:{checkpoint.method}:{checkpoint.arch}:{checkpoint.label}"


def seed_of(record: Record):
    """The seed a record's run was drawn with (`config.seed`), None if it names none."""
    return record.config.get("seed") if record.kind == "eval" else None


def select_latest(records: list[Record]) -> list[Record]:
    """The records that count: latest complete per (weights, task, seed), else latest failed.

    Pretraining and import records (no evaluation task) are left out; duplicates of one
    record_id (e.g. published records both on disk and built in) count once.
    """
    unique = {record.record_id: record for record in records}.values()
    chosen: dict[tuple, Record] = {}
    for record in sorted(unique, key=lambda record: (record.created_utc, record.record_id)):
        if record.task is None or record.kind not in ("eval", "published"):
            continue
        task = record.task
        key = (row_key(record), task.family, task.dataset, task.split, task.protocol)
        key += (seed_of(record),)
        current = chosen.get(key)
        if current is None or record.status == "complete" or current.status == "failed":
            chosen[key] = record
    return list(chosen.values())


def arch_name(arch: str) -> str:
    """resnet50x2:cifar -> 'ResNet-50 (2x), CIFAR stem'; unknown names pass through."""
    base, _, variant = arch.partition(":")
    if not base.startswith("resnet"):
        return arch
    depth, _, width = base[len("resnet") :].partition("x")
    name = f"ResNet-{depth}" + (f" ({width}x)" if width else "")
    return name + (", CIFAR stem" if variant == "cifar" else "")


def origin(record: Record) -> str | None:
    """Where foreign weights come from ("authors' release", "imported", "torchvision", ...), or
    None for the paper's rows, our pretraining and random init (their labels stay as they are).

    Foreign: `checkpoint.source` is "imported:<format>", or names another source and the record
    gives the method (without a method, e.g. a bare state dict, the row keeps its old label).
    """
    checkpoint = record.checkpoint
    source = checkpoint.source
    if record.kind == "published" or source in OWN_SOURCES:
        return None
    if source.startswith(IMPORTED_PREFIX):
        return ORIGINS.get(source[len(IMPORTED_PREFIX) :], "imported")
    return source if checkpoint.method else None


def method_name(record: Record) -> str:
    """The row's method column: "BYOL", "random init", "BYOL (authors' release)", ..."""
    method = record.checkpoint.method or ""
    name = METHOD_NAMES.get(method, method)
    where = origin(record)
    if where is None:
        return name or "?"
    return f"{name or 'unknown method'} ({where})"


def _order(record: Record, published_index: dict[str, int]) -> tuple:
    """Sort key of a row: architecture, then the paper's rows, then imported weights beside them,
    then ours (BYOL first)."""
    checkpoint = record.checkpoint
    base = checkpoint.arch.partition(":")[0]
    arch_rank = list(PARAMS_M).index(base) if base in PARAMS_M else len(PARAMS_M)
    method = checkpoint.method or ""
    method_rank = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
    if record.kind == "published":
        return (arch_rank, base, checkpoint.arch, 0, published_index[row_key(record)], 0.0, "")
    epochs = checkpoint.pretrain_epochs if checkpoint.pretrain_epochs is not None else -1.0
    group = 1 if origin(record) is not None else 2
    return (arch_rank, base, checkpoint.arch, group, method_rank, float(epochs), checkpoint.label)


def _row_fields(record: Record, order: tuple) -> dict:
    checkpoint = record.checkpoint
    base = checkpoint.arch.partition(":")[0]
    epochs = checkpoint.pretrain_epochs
    published = record.kind == "published"
    return {
        "row": row_key(record),
        "order": order,
        "kind": record.kind,
        "method": checkpoint.method or "",
        "arch": checkpoint.arch,
        "method_name": method_name(record),
        "arch_name": arch_name(checkpoint.arch),
        "params": f"{PARAMS_M[base]}M" if base in PARAMS_M else "?",
        "epochs": "—" if epochs is None else f"{round(epochs, 4):g}",
        "checkpoint": checkpoint.label,
        "weights": "paper" if published else (checkpoint.weights_sha256 or "")[:8],
    }


def _metric_names(record: Record) -> list[str]:
    """The metrics a record's cells show: its own, or for a failed one those its family needs."""
    if record.metrics:
        return list(record.metrics)
    if record.task.family == "transfer-cls":
        return [TRANSFER_METRICS.get(record.task.dataset, "top1")]
    return list(METRICS[record.task.family][1] or METRICS[record.task.family][0][:1])


def records_frame(records: list[Record]) -> pd.DataFrame:
    """Validate `records`, select the ones that count (select_latest), one frame row per metric
    and (weights, task): the mean over its seeds, with their std and count (`n`); one seed keeps
    its record's bootstrap interval (`low`, `high`). A protocol that itself averages seeds
    (segmentation: `selection.seeds`, `selection.miou_std`) gives its own std and count.

    Raises RecordError for an invalid record, e.g. a metric name its task family does not have.
    """
    for record in records:
        validate(record)
    selected = select_latest(records)
    paper_order = [row_key(record) for record in [*published_records(), *selected]]
    published_index = {key: paper_order.index(key) for key in set(paper_order)}
    groups: dict[tuple, list[Record]] = {}
    for record in selected:
        task = record.task
        key = (row_key(record), task.family, task.dataset, task.split, task.protocol)
        groups.setdefault(key, []).append(record)
    rows = []
    for group in groups.values():
        complete = [record for record in group if record.status == "complete"]
        shown = complete or [max(group, key=lambda r: (r.created_utc, r.record_id))]
        latest = max(shown, key=lambda r: (r.created_utc, r.record_id))
        fields = _row_fields(latest, _order(latest, published_index))
        for metric in _metric_names(latest):
            rows.append({**fields, **_task_fields(latest), **_cell(shown, latest, metric)})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _task_fields(record: Record) -> dict:
    task = record.task
    return {
        "family": task.family,
        "dataset": task.dataset,
        "split": task.split,
        "protocol": task.protocol,
        "status": record.status,
        "record_id": record.record_id,
        "created_utc": record.created_utc,
    }


def _cell(shown: list[Record], latest: Record, metric: str) -> dict:
    """One cell's numbers: the mean over the seeds of `shown`, their std and count, and the
    bootstrap interval when there is one seed."""
    values = [record.metrics[metric] for record in shown if metric in record.metrics]
    nan = float("nan")
    value = sum(values) / len(values) if values else nan
    count, std = len(values), pd.Series(values, dtype=float).std() if len(values) > 1 else nan
    seeds = latest.selection.get("seeds") if latest.kind == "eval" else None
    if len(shown) == 1 and isinstance(seeds, list) and len(seeds) > 1 and metric == "miou":
        count, std = len(seeds), latest.selection.get("miou_std", nan)
    low, high = latest.intervals.get(metric, [nan, nan]) if len(shown) == 1 else (nan, nan)
    unconfirmed = latest.config.get("unconfirmed", {}) if latest.kind == "published" else {}
    return {
        "metric": metric,
        "value": value,
        "low": low,
        "high": high,
        "std": std,
        "n": count,
        "marker": "†" if metric in unconfirmed else "",
        "note": unconfirmed.get(metric, ""),
    }
