"""The evaluation harness: what every evaluation CLI (linear, kNN, semisup, detection,
segmentation, and the ones to come) shares, written once.

- inputs: the checkpoint's frozen encoder and metadata, the device (`pick_device`), the records
  directory (`records_dir`), the start time (`EvalInputs`, `open_inputs`, `load_inputs`);
- work directories (`work_dir`): `<runs>/evals/<kind>/<protocol-slug>/<sha8>[-<variant>]/`, where
  `<runs>` is the parent of the run directory that holds --ckpt, else the parent of an explicit
  --records, else ./runs; an explicit --run-dir wins. Never inside records/, which holds one JSON
  file per event (docs/architecture.md, "The single shared record format");
- one record per run (`record_run`): status "complete" with metrics and selection, or "failed"
  with the error (re-raised) once the inputs were validated;
- the error boundary (`error_boundary`): a `results.errors.ByolBenchError` becomes
  `error: <sentence>` on stderr and exit status 1, also when a DataLoader worker raised it;
  argparse's usage errors exit with 2;
- the contract's flags (`add_input_arguments`, `add_common_arguments`), spelled the same in every
  CLI, and the default data-loader process count (`default_num_workers`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from evaluate.features import RANDOM_PREFIX, cached_features, load_encoder
from evaluate.splits import train_and_eval_sets
from evaluate.transforms import Preprocessing, default_image_size
from pretrain.backbones import dense_backbone_problem
from pretrain.data import DATASETS, DataError, ImageDataset, dataset_stats
from pretrain.dist import setup_logging
from pretrain.provenance import provenance
from pretrain.small_inputs import single_position_convs, use_single_position_convs
from results.errors import ByolBenchError
from results.record import (
    CheckpointRef,
    Provenance,
    Record,
    Task,
    default_records_dir,
    make_record_id,
    utc_now,
    write_record,
)
from slurm import submit as slurm_submit

log = logging.getLogger(__name__)
MAX_DEFAULT_WORKERS = 8  # more loader processes rarely help one GPU's input pipeline
WORKER_TRACEBACK = "Original Traceback (most recent call last):"  # torch's ExceptionWrapper


class InputError(ByolBenchError, ValueError):
    """A command-line value that cannot work; the message says what to pass instead."""


def default_num_workers() -> int:
    """Data-loader processes by default: the CPUs this process may use, at most 8."""
    return max(1, min(len(os.sched_getaffinity(0)), MAX_DEFAULT_WORKERS))


def pick_device(requested: str | None) -> torch.device:
    """`--device`: cuda when available by default; an explicit cuda without one is refused."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was given but no CUDA device is visible; use --device cpu")
    return torch.device(requested or ("cuda" if torch.cuda.is_available() else "cpu"))


def _ckpt_path(ckpt: str) -> str | None:
    return None if ckpt.startswith(RANDOM_PREFIX) else ckpt


def records_dir(ckpt: str, records: str | None) -> Path:
    """`--records`, else records/ beside the run directory of --ckpt, else ./records."""
    return Path(records) if records else default_records_dir(_ckpt_path(ckpt))


def runs_root(ckpt: str, records: str | None) -> Path:
    """`<runs>`: the parent of the run directory that holds --ckpt, else the parent of an
    explicit --records (the contract's default records dir is `<runs>/records`), else ./runs."""
    beside_run = default_records_dir(_ckpt_path(ckpt))
    if beside_run != Path("records"):  # --ckpt lies in <runs>/<run>/{exports,checkpoints}/
        return beside_run.parent
    return Path(records).resolve().parent if records else Path("runs").resolve()


def protocol_slug(protocol: str) -> str:
    """A protocol name as a directory name: `byol-paper-fcn/1` -> `byol-paper-fcn-v1`."""
    return protocol.replace("/", "-v")


def work_dir(
    kind: str,
    protocol: str,
    metadata: dict,
    *,
    ckpt: str,
    records: str | None,
    run_dir: str | None = None,
    variant: str | None = None,
) -> Path:
    """Where an evaluation keeps its checkpoints and per-run results: `--run-dir` if given, else
    `<runs>/evals/<kind>/<protocol-slug>/<sha8>[-<variant>]` (`variant`: what the protocol name
    does not fix, such as the data set or the seed). The default is never inside records/."""
    if run_dir:
        return Path(run_dir)
    leaf = metadata["weights_sha256"][:8] + (f"-{variant}" if variant else "")
    return runs_root(ckpt, records) / "evals" / kind / protocol_slug(protocol) / leaf


def add_input_arguments(
    parser: argparse.ArgumentParser, ckpt_help: str, *, series: bool = False
) -> None:
    """The flags of every evaluation CLI: --ckpt, --arch, --label, --records, --device,
    --num-workers (default None: the Config dataclass holds every default). `series`: --ckpt
    takes several values (evaluate/series.py; the CLI runs once per checkpoint)."""
    add = parser.add_argument
    if series:
        ckpt_help += (
            "; several files, a glob or a run directory (its checkpoints/epoch_*.pt keepers and "
            "its last export) evaluate each checkpoint in turn, one record each (with --slurm: a "
            "job array, one task per checkpoint)"
        )
    add("--ckpt", required=True, nargs="+" if series else None, help=ckpt_help)
    add(
        "--arch",
        help="architecture of foreign weights, e.g. resnet50 or resnet18:cifar "
        "(default: from the file's metadata, else inferred from the key shapes)",
    )
    add("--label", help="checkpoint label in the record (default: the file's metadata)")
    add(
        "--records",
        help="where the result record goes (default: records/ beside the run "
        "directory of --ckpt, else ./records)",
    )
    add("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    add("--num-workers", type=int, help="data-loader processes (default: usable CPUs, at most 8)")


CKPT_HELP = (
    "an export (<run>/exports/backbone-*.pt), a training checkpoint, another library's "
    "checkpoint (the authors' BYOL .pkl, MoCo, DINO, SwAV, solo-learn, lightly, mmselfsup, VISSL, "
    "torchvision/timm: detected, see python -m evaluate.convert --help; its default network), or "
    "random:<arch>[:cifar] for the random-initialisation baseline"
)


def add_common_arguments(parser: argparse.ArgumentParser, *, series: bool = False) -> None:
    """The flags of the image-classification evaluations (linear, kNN, semisup); `series`: see
    add_input_arguments."""
    add_input_arguments(parser, CKPT_HELP, series=series)
    add = parser.add_argument
    add("--dataset", choices=DATASETS, help="data set name (default: imagenet)")
    add("--data", help="root of the data set on disk (synthetic needs none)")
    add("--batch-size", type=int, help="images per batch")
    add("--seed", type=int, help="seed of the held-out split, sample order, head init, random:")
    sizes = "the checkpoint's, else 224; 32 for CIFAR, Fashion-MNIST and synthetic"
    add("--image-size", type=int, help=f"input size (default: {sizes})")
    add("--cache-dir", help="feature cache ($BYOL_BENCH_CACHE, else ~/.cache/byol-bench/features)")
    slurm_submit.add_slurm_arguments(parser)  # handled before parsing: submit_cli_if_requested


def config_from_args(config_class: type, args: argparse.Namespace):
    """`config_class` with every flag that was given applied over its defaults."""
    if isinstance(getattr(args, "ckpt", None), list):  # a series CLI's --ckpt (nargs="+")
        if len(args.ckpt) != 1:
            raise InputError(
                f"one checkpoint per evaluation, not {len(args.ckpt)}: split the series with "
                "evaluate/series.py:per_checkpoint_argvs"
            )
        args.ckpt = args.ckpt[0]
    given = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(config_class)
        if getattr(args, field.name, None) is not None
    }
    return config_class(**given)


def user_message(error: ByolBenchError) -> str:
    """The error's one sentence. An error raised in a DataLoader worker comes back re-raised by
    torch (ExceptionWrapper.reraise) as the same type with "Caught X in DataLoader worker process
    N" and the worker's traceback as its message: the sentence is the traceback's last entry."""
    text = str(error)
    if not text.startswith("Caught ") or WORKER_TRACEBACK not in text:
        return text
    kind = type(error)
    for prefix in (f"{kind.__module__}.{kind.__qualname__}: ", f"{kind.__qualname__}: "):
        start = text.rfind("\n" + prefix)
        if start >= 0:
            return text[start + 1 + len(prefix) :].strip()
    return text.strip().splitlines()[-1]


@contextlib.contextmanager
def error_boundary() -> Iterator[None]:
    """Turn a ByolBenchError into `error: <sentence>` on stderr and exit status 1 (no traceback)."""
    try:
        yield
    except ByolBenchError as error:
        sys.exit(f"error: {user_message(error)}")


@dataclass
class EvalInputs:
    """Everything an evaluation reads, validated before any work starts."""

    encoder: nn.Module  # frozen, eval mode
    metadata: dict
    device: torch.device
    records_dir: Path
    started: float  # time.monotonic() when the command started
    train_set: object = None  # ImageDataset, or a transfer task's training set
    eval_set: object = None
    eval_split: str = ""
    preprocessing: Preprocessing | None = None
    cache_dir: str | None = None
    work_dir: Path | None = None  # checkpoints and per-run results (work_dir())
    feature_kind: str | None = None  # None: the pooled feature; else its name in the cache key


def open_inputs(config, seed: int) -> EvalInputs:
    """Logging, device, the frozen encoder of `config.ckpt` (left on the CPU) and the records
    directory; the caller adds its data sets. `seed` draws random:<arch> weights."""
    setup_logging(rank=0)
    started = time.monotonic()
    device = pick_device(config.device)
    encoder, metadata = load_encoder(config.ckpt, config.arch, seed=seed)
    records = records_dir(config.ckpt, config.records)
    return EvalInputs(encoder, metadata, device, records, started)


def open_dense_inputs(
    config, seed: int, *, protocol: str, takes: str, alternatives: str
) -> EvalInputs:
    """open_inputs for the dense evaluations (detection, segmentation, depth and their frozen
    probes): `protocol` takes the backbone family `takes` ("resnet", "vit" or "any") and refuses
    the other with one sentence ending in `alternatives` (pretrain/backbones.py:
    dense_backbone_problem), before anything is written."""
    inputs = open_inputs(config, seed)
    problem = dense_backbone_problem(inputs.metadata, protocol, takes, alternatives)
    if problem:
        raise InputError(problem)
    return inputs


def load_inputs(config) -> EvalInputs:
    """Device, frozen encoder (on the device), train/eval sets and preprocessing for an
    image-classification evaluation `config`."""
    if config.batch_size < 1:
        raise InputError(f"--batch-size must be positive, not {config.batch_size}")
    inputs = open_inputs(config, config.seed)
    metadata = inputs.metadata
    train_set, eval_set, eval_split = train_and_eval_sets(config.dataset, config.data)
    check_declared_classes(metadata, config.dataset, train_set)
    known = metadata.get("preprocessing") or {}
    mean, std = checkpoint_mean_std(metadata, config.dataset)
    image_size = config.image_size or known.get("image_size") or default_image_size(config.dataset)
    preprocessing = Preprocessing(int(image_size), mean, std)
    resize = stated_resize(metadata)
    if resize is not None and not resize["honoured"]:
        log.warning(
            "the checkpoint states a %s resize (antialias %s); the probe's test view resizes "
            "bicubic with antialiasing: recorded in the record's config.checkpoint_resize",
            resize["interpolation"],
            resize["antialias"],
        )
    log.info(
        "evaluating %s (%s, sha256 %s) on %s: train %d images, %s %d images, %s",
        metadata["label"],
        metadata["arch"],
        metadata["weights_sha256"][:12],
        config.dataset,
        len(train_set),
        eval_split,
        len(eval_set),
        preprocessing,
    )
    # the same computation, faster at small sizes (pretrain/small_inputs.py: exact)
    single_position = single_position_convs(inputs.encoder, preprocessing.image_size)
    use_single_position_convs([inputs.encoder], single_position)
    inputs.encoder = inputs.encoder.to(inputs.device)
    inputs.train_set, inputs.eval_set, inputs.eval_split = train_set, eval_set, eval_split
    inputs.preprocessing, inputs.cache_dir = preprocessing, config.cache_dir
    return inputs


def check_declared_classes(metadata: dict, dataset: str, train_set: ImageDataset) -> None:
    """A checkpoint pretrained on `dataset` with K classes must meet K classes there again."""
    declared = metadata.get("pretrain_num_classes")
    if declared is None or metadata.get("pretrain_dataset") != dataset or dataset == "folder":
        return
    if declared != train_set.num_classes:
        raise DataError(
            f"the checkpoint was pretrained on {dataset} with {declared} classes, but the data "
            f"has {train_set.num_classes}; check --data, or use --dataset folder for another "
            "class set"
        )


def features(inputs: EvalInputs, images: ImageDataset, split: str, batch_size: int, workers: int):
    """Cached test-view features [N, D] and labels [N] of `images` under the input's encoder."""
    return cached_features(
        inputs.encoder,
        inputs.metadata["weights_sha256"],
        images,
        split,
        inputs.preprocessing,
        cache_dir=inputs.cache_dir,
        batch_size=batch_size,
        num_workers=workers,
        device=inputs.device,
        feature_kind=inputs.feature_kind,
    )


PROBE_RESIZE = {"interpolation": "bicubic", "antialias": True}  # pretrain/augment.py:eval_view


def checkpoint_mean_std(metadata: dict, dataset: str = "imagenet") -> tuple[tuple, tuple]:
    """(mean, std) of the input normalisation the checkpoint's metadata states, else those of
    `dataset` (pretrain/data.py:dataset_stats): what every evaluation normalises with."""
    known = metadata.get("preprocessing") or {}
    mean, std = (known["mean"], known["std"]) if known else dataset_stats(dataset)
    return tuple(mean), tuple(std)


def stated_resize(metadata: dict) -> dict | None:
    """The resize an imported checkpoint's preprocessing states (the authors' BYOL: bicubic
    without antialiasing) and whether the probes' test view (PROBE_RESIZE, always bicubic with
    antialiasing) honours it; None when the file states none. Recorded in the record's config,
    since a mismatch can move accuracy by a few tenths of a point."""
    known = metadata.get("preprocessing") or {}
    if known.get("resize_interpolation") is None and known.get("antialias") is None:
        return None
    stated = {
        "interpolation": known.get("resize_interpolation"),
        "antialias": known.get("antialias"),
    }
    return {**stated, "honoured": stated == PROBE_RESIZE, "used": dict(PROBE_RESIZE)}


def checkpoint_ref(metadata: dict, label: str | None = None) -> CheckpointRef:
    """The record's checkpoint block from an encoder's metadata (`label` overrides)."""
    arch = metadata["arch"] + (":cifar" if metadata.get("cifar_stem") else "")
    return CheckpointRef(
        weights_sha256=metadata["weights_sha256"],
        label=label or metadata.get("label") or arch,
        arch=arch,
        method=metadata.get("method"),
        pretrain_epochs=metadata.get("pretrain_epochs"),
        source=metadata.get("source"),
        path=metadata.get("path"),
        pretrain_record_id=metadata.get("pretrain_record_id"),
    )


def record_run(
    inputs: EvalInputs, config, task: Task, run: Callable[[], tuple]
) -> tuple[Record, Path]:
    """Call `run()` -> (metrics, selection) or (metrics, selection, (intervals, examples)) (the
    bootstrap intervals and their data, evaluate/metrics.py:uncertainty) and write its one record
    into inputs.records_dir: status "complete", or "failed" with the error, then re-raised."""
    fields = {"checkpoint": checkpoint_ref(inputs.metadata, config.label), "task": task}
    fields["config"] = dataclasses.asdict(config)
    resize = stated_resize(inputs.metadata)
    if resize is not None:
        fields["config"]["checkpoint_resize"] = resize
    try:
        metrics, selection, *uncertainty = run()
    except Exception as error:
        message = user_message(error) if isinstance(error, ByolBenchError) else str(error)
        failed = _record(
            inputs, fields, status="failed", error=f"{type(error).__name__}: {message}"
        )
        log.error("run failed; wrote %s", write_record(inputs.records_dir, failed))
        raise
    intervals, examples = uncertainty[0] if uncertainty else ({}, {})
    record = _record(
        inputs,
        fields,
        status="complete",
        metrics=metrics,
        selection=selection,
        intervals=intervals,
        examples=examples,
    )
    return record, write_record(inputs.records_dir, record)


def _record(inputs: EvalInputs, fields: dict, **values) -> Record:
    created = utc_now()
    task = fields["task"]
    context = provenance(inputs.device)
    return Record(
        record_id=make_record_id(task.family, task.dataset, created_utc=created),
        kind="eval",
        created_utc=created,
        provenance=Provenance(
            **{key: context.get(key) for key in ("git_sha", "git_dirty", "command", "torch")},
            torchvision=context.get("torchvision"),
            device=context.get("device"),
            world_size=context.get("world_size"),
            slurm_job_id=os.environ.get("SLURM_JOB_ID"),
            slurm_nodes=os.environ.get("SLURM_JOB_NODELIST"),
            wall_seconds=round(time.monotonic() - inputs.started, 3),
        ),
        **fields,
        **values,
    )
