"""What every evaluation CLI shares: the contract's flags, validated inputs, one result record.

docs/architecture.md, "The command-line contract": `--ckpt`, `--dataset`, `--data`, `--records`,
`--device`, ... are spelled the same in every CLI. Bad input (missing or damaged checkpoint, data
without classes, class sets that disagree) stops with one sentence that says what to do and an
exit code != 0, never a traceback. Every run ends in exactly one record (results/record.py); a run
that fails after its inputs were validated writes a record of status "failed" and re-raises.
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
from pretrain.checkpoint import CheckpointError
from pretrain.data import DATASETS, DataError, ImageDataset, dataset_stats
from pretrain.dist import setup_logging
from pretrain.provenance import provenance
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
from slurm.profile import ProfileError

log = logging.getLogger(__name__)


class InputError(ByolBenchError, ValueError):
    """A command-line value that cannot work; the message says what to pass instead."""


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The contract's flags (default None: the Config dataclass holds every default)."""
    add = parser.add_argument
    add(
        "--ckpt",
        required=True,
        help="an export (<run>/exports/backbone-*.pt), a training "
        "checkpoint, a torchvision/timm ResNet state dict, or random:<arch>[:cifar] for the "
        "random-initialisation baseline",
    )
    add("--dataset", choices=DATASETS, help="data set name (default: imagenet)")
    add("--data", help="root of the data set on disk (synthetic needs none)")
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
    add("--batch-size", type=int, help="images per batch")
    add("--seed", type=int, help="seed of the held-out split, sample order, head init, random:")
    add(
        "--image-size",
        type=int,
        help="input size (default: the checkpoint's, else 224; 32 "
        "for CIFAR, Fashion-MNIST and synthetic)",
    )
    add("--num-workers", type=int, help="data-loader processes")
    slurm_submit.add_slurm_arguments(
        parser
    )  # handled before parsing: slurm.submit_cli_if_requested
    add(
        "--cache-dir",
        help="feature cache (default: $BYOL_BENCH_CACHE, else ~/.cache/byol-bench/features)",
    )


def config_from_args(config_class: type, args: argparse.Namespace):
    """`config_class` with every flag that was given applied over its defaults."""
    given = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(config_class)
        if getattr(args, field.name, None) is not None
    }
    return config_class(**given)


@contextlib.contextmanager
def error_boundary() -> Iterator[None]:
    """Turn bad input into `error: <sentence>` on stderr and exit code 1 (no traceback)."""
    try:
        yield
    except (
        DataError,
        CheckpointError,
        InputError,
        ProfileError,
        slurm_submit.SlurmJobError,
    ) as error:
        sys.exit(f"error: {error}")


@dataclass
class EvalInputs:
    """Everything an evaluation reads, validated before any work starts."""

    encoder: nn.Module  # frozen, eval mode, on `device`
    metadata: dict
    train_set: ImageDataset
    eval_set: ImageDataset
    eval_split: str
    preprocessing: Preprocessing
    device: torch.device
    records_dir: Path
    cache_dir: str | None
    started: float  # time.monotonic() when the command started


def load_inputs(config) -> EvalInputs:
    """Device, frozen encoder, train/eval sets and preprocessing for an evaluation `config`."""
    setup_logging(rank=0)
    started = time.monotonic()
    if config.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was given but no CUDA device is visible; use --device cpu")
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if config.batch_size < 1:
        raise InputError(f"--batch-size must be positive, not {config.batch_size}")
    encoder, metadata = load_encoder(config.ckpt, config.arch, seed=config.seed)
    train_set, eval_set, eval_split = train_and_eval_sets(config.dataset, config.data)
    check_declared_classes(metadata, config.dataset, train_set)
    known = metadata.get("preprocessing") or {}
    mean, std = (known["mean"], known["std"]) if known else dataset_stats(config.dataset)
    image_size = config.image_size or known.get("image_size") or default_image_size(config.dataset)
    preprocessing = Preprocessing(int(image_size), tuple(mean), tuple(std))
    ckpt_path = None if config.ckpt.startswith(RANDOM_PREFIX) else config.ckpt
    records_dir = Path(config.records) if config.records else default_records_dir(ckpt_path)
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
    return EvalInputs(
        encoder.to(device),
        metadata,
        train_set,
        eval_set,
        eval_split,
        preprocessing,
        device,
        records_dir,
        config.cache_dir,
        started,
    )


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
    )


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


def run_and_record(
    inputs: EvalInputs, config, family: str, protocol: str, run: Callable[[], tuple[dict, dict]]
) -> tuple[Record, Path]:
    """Call `run()` -> (metrics, selection) and write its one record (status "failed" on error)."""
    task = Task(family, config.dataset, inputs.eval_split, protocol)
    return record_run(inputs, config, task, run)


def record_run(inputs, config, task: Task, run: Callable[[], tuple[dict, dict]]):
    """`run_and_record` for a task built by the caller; `inputs` needs metadata, device, started
    and records_dir (an EvalInputs, or a transfer CLI's inputs)."""
    fields = {"checkpoint": checkpoint_ref(inputs.metadata, config.label), "task": task}
    fields["config"] = dataclasses.asdict(config)
    try:
        metrics, selection = run()
    except Exception as error:
        failed = _record(inputs, fields, status="failed", error=f"{type(error).__name__}: {error}")
        log.error("run failed; wrote %s", write_record(inputs.records_dir, failed))
        raise
    record = _record(inputs, fields, status="complete", metrics=metrics, selection=selection)
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
            wall_seconds=round(time.monotonic() - inputs.started, 3),
        ),
        **fields,
        **values,
    )
