"""Semantic-segmentation transfer: fine-tune a pretrained backbone, report mIoU, one record.

    python -m transfer.segmentation --ckpt RUN/exports/backbone-3f2a9c1d.pt --data VOCdevkit/VOC2012
    python -m transfer.segmentation --ckpt ... --protocol ade20k-semfpn-80k/1 --data ADE/
    python -m transfer.segmentation --ckpt ... --engine mmseg   # same protocol on mmsegmentation

The protocols (settings and sources) are the presets in transfer/segmentation/protocols.py:
`byol-paper-fcn/1` (BYOL v3, App. D.4: FCN, VOC2012 train_aug -> val, LR chosen on 2,119 held-out
images, mean of 5 seeds) and `ade20k-semfpn-80k/1` take ResNets; SelfPatch's ADE20K protocols
`selfpatch-ade20k-semfpn-vit-40k/1` and `selfpatch-ade20k-upernet-vit-160k/1` take ViTs
(transfer/segmentation/vit_models.py); each refuses the other family with one sentence. The
frozen linear probes `frozen-linear-seg/1` (VOC2012) and `frozen-linear-seg-ade20k/1`
(transfer/dense_probe/: BN + 1x1 conv on the frozen encoder's cached maps, every LR in one pass)
are run by transfer/dense_probe/segmentation.py and write the same kind of record under their
own names. With several candidate LRs the sweep trains on train minus the held-out images and
chooses on them; then every seed trains on all of train at the chosen LR and is tested on the
reported split; the record's `miou` is the mean over seeds.

Each (LR, seed) run lives in `<run-dir>/<phase>-lr<lr>-seed<seed>/` with checkpoints and, once
done, result.json: the same command resumes an interrupted protocol where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from evaluate import harness
from evaluate.transforms import Preprocessing
from pretrain import log_sinks
from results import bootstrap
from results.record import Task
from slurm import submit as slurm_submit
from transfer.dense_probe.protocols import PROBE_PROTOCOLS, ProbeProtocol, narrowed
from transfer.dense_probe.segmentation import check_segmentation_inputs, run_frozen_segmentation
from transfer.segmentation.data import build_segmentation_set, check_sizes, hold_out_images
from transfer.segmentation.engine import PER_IMAGE_FILE, Job, run_job
from transfer.segmentation.metrics import mean_iou_of_counts
from transfer.segmentation.protocols import (
    PROTOCOLS,
    SegmentationProtocol,
    refusal_alternatives,
    with_crop,
)

ENGINES = ("torchvision", "mmseg")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentationConfig:
    """One segmentation-transfer evaluation: a protocol preset plus what to run it on.

    The protocol's settings (iterations, schedule, batch, crop, LRs, seeds, held-out size) are in
    `settings`, resolved from `protocol` and the shortening flags, and go into the record.
    """

    ckpt: str  # export, training checkpoint, torchvision state dict, or random:<arch>
    protocol: str = "byol-paper-fcn/1"  # a key of PROTOCOLS
    data: str | None = None
    engine: str = "torchvision"  # or "mmseg" (needs `make mm`)
    arch: str | None = None
    label: str | None = None
    records: str | None = None
    run_dir: str | None = None  # default: harness.work_dir, <runs>/evals/segmentation/...
    device: str | None = None
    num_workers: int = field(default_factory=harness.default_num_workers)  # CPUs, at most 8
    ckpt_every_min: float = 10.0  # minutes between checkpoints: what a preemption can lose
    max_steps: int | None = None  # shorten: iterations per run
    batch_size: int | None = None
    crop: int | None = None
    lrs: tuple[float, ...] | None = None
    seeds: tuple[int, ...] | None = None
    heldout: int | None = None  # shorten: training images held out for the LR sweep
    epochs: int | None = None  # frozen-linear-seg*: epochs over the cached features
    cache_dir: str | None = None  # frozen-linear-seg*: feature cache (evaluate/features.py's)
    log_to: str = ""  # each run's log.jsonl step lines also to tensorboard, wandb
    settings: SegmentationProtocol | ProbeProtocol | None = None  # resolved in parse_config


def resolve(config: SegmentationConfig) -> SegmentationProtocol:
    """The protocol preset with the shortening flags applied."""
    log_sinks.check_log_to(config.log_to)
    if config.protocol in PROBE_PROTOCOLS:
        return resolve_probe(config)
    if config.protocol not in PROTOCOLS:
        raise harness.InputError(
            f"unknown protocol {config.protocol!r}; use one of "
            f"{', '.join([*PROTOCOLS, *PROBE_PROTOCOLS])}"
        )
    if config.epochs is not None:
        raise harness.InputError(
            "--epochs is for the frozen-linear-seg* protocols; use --max-steps"
        )
    settings = PROTOCOLS[config.protocol]()
    if config.crop is not None:
        settings = with_crop(settings, config.crop)
    overrides = {
        "iterations": config.max_steps,
        "batch_size": config.batch_size,
        "lrs": config.lrs,
        "seeds": config.seeds,
        "heldout": config.heldout,
    }
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    if config.crop is not None and settings.test_crop is not None:
        settings = replace(settings, test_crop=max(config.crop, settings.test_crop))
    for name in ("iterations", "batch_size", "crop"):
        if getattr(settings, name) < 1:
            raise harness.InputError(f"--{name.replace('_', '-')} must be positive")
    if not settings.lrs or not settings.seeds:
        raise harness.InputError("--lrs and --seeds need at least one value")
    if config.engine not in ENGINES:
        raise harness.InputError(f"unknown --engine {config.engine!r}; use one of {ENGINES}")
    return settings


def resolve_probe(config: SegmentationConfig) -> ProbeProtocol:
    """A frozen-probe preset with the flags that apply to it (epochs, batch, view size, LRs,
    seed, held-out count); the fine-tune-only flags are refused."""
    if config.max_steps is not None or config.engine != "torchvision":
        raise harness.InputError(
            f"{config.protocol} trains a probe on cached features: use --epochs, not --max-steps, "
            "and no --engine"
        )
    settings = narrowed(
        PROBE_PROTOCOLS[config.protocol](),
        epochs=config.epochs,
        batch_size=config.batch_size,
        crop=config.crop,
        lrs=config.lrs,
        seeds=config.seeds,
        heldout=config.heldout,
    )
    values = (settings.schedule.epochs, settings.schedule.batch_size, settings.crop)
    if min(values) < 1 or not settings.lrs or min(settings.lrs) <= 0:
        raise harness.InputError("--epochs, --batch-size, --crop and --lrs must be positive")
    if len(settings.seeds) != 1:
        raise harness.InputError(f"{config.protocol} runs one seed; pass one value to --seeds")
    return settings


def run_probe_protocol(config: SegmentationConfig, inputs: harness.EvalInputs) -> tuple:
    """(metrics, selection, (intervals, examples)) of a frozen-probe protocol: the interval is
    this module's mIoU bootstrap over the reported images' per-image counts."""
    metrics, selection = run_frozen_segmentation(
        config.settings, inputs, config.num_workers, config.log_to
    )
    return metrics, selection, miou_uncertainty([Path(inputs.work_dir)])


def run_protocol(config: SegmentationConfig, inputs: harness.EvalInputs) -> tuple:
    """(metrics, selection, (intervals, examples)): LR sweep on the held-out images if several
    LRs, then the seeds; the mIoU's bootstrap interval over the evaluated images."""
    settings, run_dir = config.settings, Path(inputs.work_dir)
    run_one = _engine(config.engine)
    candidates = []
    if len(settings.lrs) > 1:
        sweep_train, heldout = hold_out_images(inputs.train_set, settings.heldout)
        for lr in settings.lrs:
            result = run_one(
                config,
                inputs,
                lr,
                settings.seeds[0],
                sweep_train,
                heldout,
                run_dir / f"sweep-lr{lr:g}-seed{settings.seeds[0]}",
            )
            candidates.append({"lr": lr, "heldout_miou": result["miou"]})
        best = max(candidates, key=lambda c: c["heldout_miou"])["lr"]
        chosen_on = heldout.split
    else:
        best, chosen_on = settings.lrs[0], "given"
    runs = [
        run_one(
            config,
            inputs,
            best,
            seed,
            inputs.train_set,
            inputs.eval_set,
            run_dir / f"final-lr{best:g}-seed{seed}",
        )
        for seed in settings.seeds
    ]
    mious = [run["miou"] for run in runs]
    selection = {
        "lr": best,
        "chosen_on": chosen_on,
        "candidates": candidates,
        "seeds": [{"seed": r["seed"], "miou": r["miou"]} for r in runs],
        "miou_std": statistics.stdev(mious) if len(mious) > 1 else 0.0,
        "iterations": settings.iterations,
        "seconds_per_iteration": statistics.mean(r["seconds_per_iteration"] for r in runs),
        "engine": config.engine,
        "run_dir": str(run_dir.resolve()),
        "train_images": len(inputs.train_set),
        "eval_images": len(inputs.eval_set),
        "eval_ids_sha256": inputs.eval_set.fingerprint(),
    }
    if runs[0].get("samples"):  # the first seed's test images for the report (results/samples.py)
        selection["samples"] = runs[0]["samples"]
    final_dirs = [run_dir / f"final-lr{best:g}-seed{seed}" for seed in settings.seeds]
    return {"miou": statistics.mean(mious)}, selection, miou_uncertainty(final_dirs)


def miou_uncertainty(final_dirs: list[Path]) -> tuple[dict, dict]:
    """(intervals, examples): the 95% bootstrap interval of the reported mIoU (the mean over
    the seeds' runs), resampling the evaluated images jointly for every seed, from each run's
    per-image counts (engine.PER_IMAGE_FILE; metrics.py). Empty where a run has none (the mmseg
    engine, or a run finished before they were kept)."""
    paths = [directory / PER_IMAGE_FILE for directory in final_dirs]
    if not all(path.is_file() for path in paths):
        return {}, {}
    counts = [np.load(path) for path in paths]  # each [N, 3, K]

    def statistic(index: np.ndarray) -> float:
        return statistics.mean(mean_iou_of_counts(one[index].sum(axis=0)) for one in counts)

    low, high = bootstrap.interval(statistic, len(counts[0]))
    files = [
        {"file": str(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        for path in paths
    ]
    examples = {"count": len(counts[0]), "bootstrap": bootstrap.settings(), "per_image": files}
    return {"miou": [round(100 * low, 4), round(100 * high, 4)]}, examples


def _engine(name: str):
    if name == "mmseg":
        from transfer.segmentation import mmseg_runner  # imports mmseg, which needs full mmcv

        return mmseg_runner.run_one
    return run_one_torchvision


def run_one_torchvision(config, inputs, lr, seed, train_set, eval_set, run_dir) -> dict:
    """One (LR, seed) run on the built-in engine (transfer/segmentation/engine.py)."""
    job = Job(
        protocol=config.settings,
        lr=lr,
        seed=seed,
        train_set=train_set,
        eval_set=eval_set,
        run_dir=Path(run_dir),
        weights_sha256=inputs.metadata["weights_sha256"],
        mean=inputs.preprocessing.mean,
        std=inputs.preprocessing.std,
        device=str(inputs.device),
        num_workers=config.num_workers,
        ckpt_every_min=config.ckpt_every_min,
        log_to=config.log_to,
    )
    return run_job(job, inputs.encoder)


def load_data(settings: SegmentationProtocol, root: str | None):
    """(train set, reported set), label sizes checked against their images."""
    train_set = build_segmentation_set(settings.dataset, root, settings.train_split)
    eval_set = build_segmentation_set(settings.dataset, root, settings.eval_split)
    for images in (train_set, eval_set):
        check_sizes(images)
    return train_set, eval_set


def load_inputs(config: SegmentationConfig) -> harness.EvalInputs:
    """Device, encoder (left on the CPU: each run fine-tunes a copy), data and directories, all
    validated before training starts."""
    settings = config.settings
    if config.engine == "mmseg":
        from transfer.segmentation import mmseg_runner

        mmseg_runner.require_mmseg(config.device)
    inputs = harness.open_dense_inputs(
        config,
        min(settings.seeds),
        protocol=settings.name,
        takes=settings.backbone,  # the probes (transfer/dense_probe/protocols.py): "any"
        alternatives=refusal_alternatives(settings.backbone),
    )
    inputs.train_set, inputs.eval_set = load_data(settings, config.data)
    inputs.eval_split, inputs.cache_dir = settings.eval_split, config.cache_dir
    mean, std = harness.checkpoint_mean_std(inputs.metadata)
    inputs.preprocessing = Preprocessing(settings.crop, mean, std)
    if isinstance(settings, ProbeProtocol):
        check_segmentation_inputs(settings, inputs)  # a ViT's patches must divide the view
    inputs.work_dir = harness.work_dir(
        "segmentation",
        settings.name,
        inputs.metadata,
        ckpt=config.ckpt,
        records=config.records,
        run_dir=config.run_dir,
    )
    return inputs


def parse_config(argv: list[str] | None) -> SegmentationConfig:
    """SegmentationConfig from the command line (flags override the preset)."""
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="python -m transfer.segmentation",
        description=__doc__.split("\n")[0],
        epilog="Protocols: transfer/segmentation/protocols.py (settings and sources).",
    )
    harness.add_input_arguments(
        parser,
        "an export (<run>/exports/backbone-*.pt), a training checkpoint, a torchvision ResNet "
        "state dict, or random:<arch> (baseline)",
    )
    add = parser.add_argument
    add(
        "--protocol",
        choices=[*PROTOCOLS, *PROBE_PROTOCOLS],
        help="protocol preset (default: byol-paper-fcn/1; frozen-linear-seg*: linear probes)",
    )
    add("--data", help="VOCdevkit/VOC2012 (byol-paper-fcn/1) or ADEChallengeData2016 (ade20k-*)")
    add("--engine", choices=ENGINES, help="torchvision (built in, default) or mmseg (`make mm`)")
    add(
        "--run-dir",
        help="checkpoints and per-run results; an existing one resumes (default: "
        "<runs>/evals/segmentation/<protocol>/<sha8>)",
    )
    add("--ckpt-every-min", type=float, help="minutes between checkpoints (default 10)")
    add("--max-steps", type=int, help="shorten: training iterations per run")
    add("--epochs", type=int, help="frozen-linear-seg*: epochs over the cached features")
    add(
        "--cache-dir",
        help="frozen-linear-seg*: feature cache (default: $BYOL_BENCH_CACHE, else "
        "~/.cache/byol-bench/features)",
    )
    add("--batch-size", type=int, help="images per iteration (default: the protocol's)")
    add(
        "--crop",
        type=int,
        help="training crop in px, the ADE20K base size scaled with it; frozen-linear-seg*: the "
        "view's size (default: the protocol's)",
    )
    add("--lrs", type=float, nargs="+", help="candidate LRs; one value skips the sweep")
    add("--seeds", type=int, nargs="+", help="seeds whose mean is reported")
    add(
        "--heldout",
        type=int,
        help="training images held out to choose the LR (default: the "
        "protocol's, 2,119 for byol-paper-fcn/1)",
    )
    log_sinks.add_log_argument(parser)
    slurm_submit.add_slurm_arguments(parser)
    args = parser.parse_args(argv)
    for name in ("lrs", "seeds"):
        if getattr(args, name) is not None:
            setattr(args, name, tuple(getattr(args, name)))
    return harness.config_from_args(SegmentationConfig, args)


def main(argv: list[str] | None = None) -> None:
    with harness.error_boundary():
        if slurm_submit.submit_cli_if_requested("transfer.segmentation", argv):
            return
    config = parse_config(argv)
    with harness.error_boundary():
        config = replace(config, settings=resolve(config))
        inputs = load_inputs(config)
        settings = config.settings
        task = Task("segmentation", settings.dataset, settings.eval_split, settings.name)
        run = run_probe_protocol if isinstance(settings, ProbeProtocol) else run_protocol
        record, path = harness.record_run(inputs, config, task, lambda: run(config, inputs))
    selection = record.selection
    if isinstance(settings, ProbeProtocol):
        print(
            f"segmentation {record.task.protocol} {record.task.dataset}/{record.task.split} "
            f"[{record.checkpoint.label}, {record.checkpoint.weights_sha256[:8]}]: "
            f"mIoU {record.metrics['miou']:.2f} (frozen linear probe, lr {selection['lr']:g}, "
            f"chosen on {selection['chosen_on']}) -> {path}"
        )
        return
    print(
        f"segmentation {record.task.protocol} {record.task.dataset}/{record.task.split} "
        f"[{record.checkpoint.label}, {record.checkpoint.weights_sha256[:8]}]: "
        f"mIoU {record.metrics['miou']:.2f} over {len(selection['seeds'])} seed(s) "
        f"(lr {selection['lr']:g}, chosen on {selection['chosen_on']}; "
        f"{selection['seconds_per_iteration']:.3f} s/iter, {config.engine}) -> {path}"
    )


if __name__ == "__main__":
    main()
