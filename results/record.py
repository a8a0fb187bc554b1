"""THE result record: one JSON file per event, written once, never edited (no torch import).

Schema `byol-bench.record/1`, as specified in docs/architecture.md, "The single shared record
format". Every pretraining run, import, evaluation and published paper number is a `Record`;
tables are pivots over records, never over logs.

- Identity of weights: `checkpoint.weights_sha256` (SHA-256 over the sorted (name, dtype, shape,
  bytes) of the backbone state dict; see pretrain/checkpoint.py:weights_sha256).
- What was measured: `task.family` + `task.dataset` + `task.split` + `task.protocol` (name/version).
- Metric names are fixed per task family (METRICS) and checked by `validate()`.

`write_record` writes `<records_dir>/<record_id>.json` through a temporary file, fsync and
`os.replace`: no shared file is ever appended to, so any number of concurrent writers lose nothing.
`read_records` skips temporary files and reports (logging warning) and skips invalid ones.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from results.atomic import write_atomic
from results.errors import ByolBenchError

SCHEMA = "byol-bench.record/1"
KINDS = ("pretrain", "import", "eval", "published")
STATUSES = ("complete", "failed")
# family -> (allowed metric names, names a complete record must carry)
METRICS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "pretrain": (("loss", "online_probe_top1"), ()),
    "linear": (("top1", "top5"), ("top1", "top5")),
    "semisup": (("top1", "top5"), ("top1", "top5")),
    "knn": (("top1", "top5"), ("top1", "top5")),
    "transfer-cls": (("top1", "mean_per_class", "map11"), ()),  # exactly one, per data set
    # box AP (VOC or COCO); mask AP of instance segmentation (COCO Mask R-CNN)
    "detection": (("ap50", "ap", "ap75", "mask_ap", "mask_ap50", "mask_ap75"), ("ap50",)),
    "segmentation": (("miou",), ("miou",)),
    # NYU v2 depth (BYOL v3, Table 4): pct of pixels within 1.25^n, rms error (m), mean
    # relative error, mean |log10 error|
    "depth": (
        ("delta1", "delta2", "delta3", "rms", "rel", "log10"),
        ("delta1", "delta2", "delta3", "rms", "rel"),
    ),
}
# not percentages: the pretraining loss, depth's errors in metres and their ratios
UNBOUNDED_METRICS = ("loss", "rms", "rel", "log10")
LOWER_IS_BETTER = ("rms", "rel", "log10")  # every other metric: higher is better
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
log = logging.getLogger(__name__)


class RecordError(ByolBenchError, ValueError):
    """A record that does not follow the schema; the message names the offending field."""


@dataclass(frozen=True)
class CheckpointRef:
    """Which weights: the same block the export's metadata carries."""

    weights_sha256: str | None  # None only for published numbers of weights we do not have
    label: str
    arch: str
    method: str | None = None  # "byol", "random-init", "supervised", ...
    pretrain_epochs: float | None = None
    source: str | None = None  # "byol-bench", "torchvision", "random-init", a paper, ...
    path: str | None = None
    pretrain_record_id: str | None = None


@dataclass(frozen=True)
class Task:
    """What was measured: family, data set, split and protocol name/version."""

    family: str  # a key of METRICS
    dataset: str
    split: str
    protocol: str  # "<name>/<version>", e.g. "byol-paper/1", "cached-centercrop/1"


@dataclass(frozen=True)
class Provenance:
    """Where a result came from; `source` is the citation of a published number."""

    git_sha: str | None = None
    git_dirty: bool | None = None
    command: str | None = None
    torch: str | None = None
    torchvision: str | None = None
    device: str | None = None
    world_size: int | None = None
    slurm_job_id: str | None = None
    slurm_nodes: str | None = None  # the job's nodes as SLURM lists them, e.g. "gpu[001-004]"
    wall_seconds: float | None = None
    source: str | None = None


@dataclass(frozen=True)
class Record:
    """One result; see the module docstring. `error` is set exactly when status is "failed"."""

    record_id: str
    kind: str
    status: str
    created_utc: str
    checkpoint: CheckpointRef
    task: Task | None  # None only for kind "import"
    metrics: dict[str, float] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=dict)  # chosen hyper-parameters and why
    config: dict[str, Any] = field(default_factory=dict)  # asdict(<entry point Config>) as run
    provenance: Provenance = field(default_factory=Provenance)
    error: str | None = None
    schema: str = SCHEMA
    # metric -> [low, high]: its 95% bootstrap interval (results/bootstrap.py), where measured
    intervals: dict[str, list[float]] = field(default_factory=dict)
    # what the intervals were drawn from: count, bootstrap settings, per-example bits / labels
    examples: dict[str, Any] = field(default_factory=dict)


_NESTED = {"checkpoint": CheckpointRef, "task": Task, "provenance": Provenance}


def utc_now() -> str:
    """The current UTC time as written in records: 2026-11-22T18:03:11Z."""
    return dt.datetime.now(dt.UTC).strftime(_TIME_FORMAT)


def make_record_id(*parts: str, created_utc: str | None = None) -> str:
    """`<UTC stamp>-<parts, slugged>-<8 random hex>`: 20261122T180311Z-linear-imagenet-7c1e09ab.

    The random suffix keeps ids unique across concurrent writers within the same second.
    """
    stamp = (created_utc or utc_now()).replace("-", "").replace(":", "")
    slugs = [re.sub(r"[^A-Za-z0-9.]+", "-", str(part)).strip("-") for part in parts]
    return "-".join([stamp, *[slug for slug in slugs if slug], secrets.token_hex(4)])


def published_record(
    record_id: str,
    *,
    source: str,
    published_utc: str,
    label: str,
    arch: str,
    method: str,
    task: Task,
    metrics: dict,
    table: str,
    unconfirmed: dict | None = None,
    pretrain_epochs: int | None = None,
) -> Record:
    """A published number as a record of kind "published": `source` (the paper) and `table`
    (where in it) become the provenance; `unconfirmed` maps a metric to why it is doubtful."""
    return Record(
        record_id=record_id,
        kind="published",
        status="complete",
        created_utc=published_utc,
        checkpoint=CheckpointRef(
            weights_sha256=None,
            label=label,
            arch=arch,
            method=method,
            pretrain_epochs=pretrain_epochs,
            source=source,
        ),
        task=task,
        metrics=metrics,
        config={"table": table, "unconfirmed": unconfirmed or {}},
        provenance=Provenance(source=f"{source}, {table}"),
    )


def to_dict(record: Record) -> dict[str, Any]:
    """The record as plain JSON types, `schema` first."""
    data = dataclasses.asdict(record)
    return {"schema": data.pop("schema"), **data}


def to_json(record: Record) -> str:
    """Validated, indented JSON text of the record."""
    validate(record)
    try:
        return json.dumps(to_dict(record), indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as error:  # NaN or a non-JSON type in selection/config
        raise RecordError(f"record {record.record_id} is not plain JSON ({error})") from error


def from_dict(data: dict[str, Any]) -> Record:
    """Build and validate a Record from parsed JSON; unknown or missing keys raise RecordError."""
    if not isinstance(data, dict):
        raise RecordError(f"a record is a JSON object, not {type(data).__name__}")
    if data.get("schema") != SCHEMA:
        raise RecordError(f"schema is {data.get('schema')!r}; this reader knows {SCHEMA!r}")
    values = _check_keys(Record, data, "record")
    for name, cls in _NESTED.items():
        if values.get(name) is not None:
            values[name] = cls(**_check_keys(cls, values[name], name))
    record = Record(**values)
    validate(record)
    return record


def from_json(text: str) -> Record:
    """Parse and validate one record's JSON text."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise RecordError(f"not valid JSON ({error})") from error
    return from_dict(data)


def _check_keys(cls: type, data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise RecordError(f"{where} must be a JSON object, not {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    required = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    unknown, missing = sorted(set(data) - known), sorted(required - set(data))
    if unknown:
        raise RecordError(f"{where} has unknown keys {unknown}; known keys: {sorted(known)}")
    if missing:
        raise RecordError(f"{where} lacks required keys {missing}")
    return dict(data)


def validate(record: Record) -> None:
    """Raise RecordError unless `record` follows schema byol-bench.record/1 (see module doc)."""
    _require(record.schema == SCHEMA, f"schema must be {SCHEMA!r}, not {record.schema!r}")
    _require(
        isinstance(record.record_id, str) and bool(_ID_PATTERN.match(record.record_id)),
        f"record_id {record.record_id!r} must be a file-name-safe string ([A-Za-z0-9._-])",
    )
    _require(record.kind in KINDS, f"kind {record.kind!r} is not one of {KINDS}")
    _require(record.status in STATUSES, f"status {record.status!r} is not one of {STATUSES}")
    try:
        dt.datetime.strptime(record.created_utc, _TIME_FORMAT)
    except (TypeError, ValueError) as error:
        raise RecordError(
            f"created_utc {record.created_utc!r} is not like 2026-11-22T18:03:11Z"
        ) from error
    for name, cls in _NESTED.items():
        value = getattr(record, name)
        allowed_none = name == "task"  # checked with the kind below
        _require(
            isinstance(value, cls) or (allowed_none and value is None),
            f"{name} must be a {cls.__name__} object",
        )
    for name in ("metrics", "selection", "config", "intervals", "examples"):
        _require(isinstance(getattr(record, name), dict), f"{name} must be a JSON object")
    _validate_intervals(record)
    _validate_checkpoint(record)
    _validate_task_and_metrics(record)
    if record.status == "failed":
        _require(bool(record.error), "a failed record carries the error message in `error`")
    else:
        _require(record.error is None, "only a failed record carries an `error`")
    if record.kind == "published":
        _require(bool(record.provenance.source), "a published record cites provenance.source")


def _validate_checkpoint(record: Record) -> None:
    sha = record.checkpoint.weights_sha256
    if sha is None:
        _require(record.kind == "published", "checkpoint.weights_sha256 is required")
    else:
        _require(
            isinstance(sha, str) and bool(re.fullmatch(r"[0-9a-f]{64}", sha)),
            f"checkpoint.weights_sha256 {sha!r} is not 64 lowercase hex digits",
        )
    for name in ("label", "arch"):
        value = getattr(record.checkpoint, name)
        _require(isinstance(value, str) and bool(value), f"checkpoint.{name} must be a string")


def _validate_task_and_metrics(record: Record) -> None:
    task = record.task
    if task is None:
        _require(record.kind == "import", f"a {record.kind} record needs a task")
        _require(not record.metrics, "a record without a task carries no metrics")
        return
    _require(task.family in METRICS, f"task.family {task.family!r} is not one of {list(METRICS)}")
    _require(
        (task.family == "pretrain") == (record.kind == "pretrain"),
        f"task.family {task.family!r} does not go with kind {record.kind!r}",
    )
    for name in ("dataset", "split", "protocol"):
        value = getattr(task, name)
        _require(isinstance(value, str) and bool(value), f"task.{name} must be a string")
    _require("/" in task.protocol, f"task.protocol {task.protocol!r} must be '<name>/<version>'")
    allowed, required = METRICS[task.family]
    for name, value in record.metrics.items():
        _require(
            name in allowed, f"metric {name!r} is not allowed for {task.family}; use {allowed}"
        )
        _require(
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value),
            f"metric {name} = {value!r} is not a finite number",
        )
        _require(
            name in UNBOUNDED_METRICS or 0.0 <= value <= 100.0,
            f"metric {name} = {value} is not a percentage in [0, 100]",
        )
    if record.status == "complete":
        # a published record carries what its source lists (SelfPatch's COCO rows: no AP50)
        missing = [n for n in required if n not in record.metrics and record.kind != "published"]
        _require(not missing, f"a complete {task.family} record lacks metrics {missing}")
        if task.family == "transfer-cls":
            _require(len(record.metrics) == 1, "a transfer-cls record carries exactly one metric")


def _validate_intervals(record: Record) -> None:
    for name, bounds in record.intervals.items():
        _require(name in record.metrics, f"interval of {name!r}, a metric the record lacks")
        _require(
            isinstance(bounds, list)
            and len(bounds) == 2
            and all(isinstance(v, int | float) and math.isfinite(v) for v in bounds)
            and bounds[0] <= bounds[1]
            and (name in UNBOUNDED_METRICS or 0.0 <= bounds[0] and bounds[1] <= 100.0),
            f"interval of {name} = {bounds!r} is not [low, high] with "
            + ("low <= high" if name in UNBOUNDED_METRICS else "0 <= low <= high <= 100"),
        )


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise RecordError(message)


def write_record(records_dir: str | os.PathLike, record: Record) -> Path:
    """Validate and write `<records_dir>/<record_id>.json` atomically; never overwrites a record.

    results/atomic.py: a unique hidden `*.tmp` file in the same directory, fsync, `os.replace`,
    directory fsync: a reader sees the whole record or none.
    """
    path = Path(records_dir) / f"{record.record_id}.json"
    if path.exists():
        raise FileExistsError(f"record {path} exists already; records are written once")
    return write_atomic(path, to_json(record).encode("utf-8"))


def read_records(records_dir: str | os.PathLike) -> list[Record]:
    """Every valid record in `records_dir`, oldest first (by created_utc, then record_id).

    Temporary files (`*.tmp`, in-flight writes) are skipped silently; a file that is not a valid
    record is reported with its path (logging warning) and skipped.
    """
    directory = Path(records_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"records directory {directory} does not exist; pass --records DIR")
    records = []
    for path in sorted(directory.glob("*.json")):
        if path.name.startswith(".") or path.name.endswith(".tmp"):
            continue
        try:
            records.append(from_json(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, RecordError) as error:
            log.warning("skipping invalid record %s: %s", path, error)
    return sorted(records, key=lambda record: (record.created_utc, record.record_id))


def default_records_dir(ckpt: str | os.PathLike | None) -> Path:
    """The command-line contract's default `--records`: `records/` beside the run directory of
    `ckpt` (`<runs>/<run>/exports/x.pt` -> `<runs>/records`), else `./records`."""
    if ckpt is not None:
        path = Path(ckpt).resolve()
        run_dir = path.parent.parent
        if path.parent.name in ("exports", "checkpoints") and (run_dir / "config.json").is_file():
            return run_dir.parent / "records"
    return Path("records")
