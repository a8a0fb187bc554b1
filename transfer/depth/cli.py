"""Monocular depth transfer on NYU Depth v2 (BYOL v3, App. D.6, Table 4): fine-tune, score, record.

    python -m transfer.depth --ckpt RUN/exports/backbone-3f2a9c1d.pt --data NYU/ --frames NYU/sync
    python -m transfer.depth --ckpt ... --data NYU/ --train-source labelled  # the 795: deviation
    python -m transfer.depth --ckpt ... --data NYU/ --frames NYU/sync --seeds 0 1 2 --slurm ...

`--data` is the folder holding `nyu_depth_v2_labeled.mat` and `splits.mat`: the 654 official test
images always come from there. The paper trains on frames from the raw sequences (`--frames`: the
folder of scene folders with rgb_*.jpg / sync_depth_*.png as cleinc/bts prepares them,
transfer/depth/data.py); `--train-source labelled` trains on the 795 labelled training images
instead, recorded under its own protocol name (a deviation, transfer/depth/protocols.py). The run
lives in `<run-dir>/lr<lr>-seed<seed>/` with its checkpoints: the same command resumes it.

`--protocol frozen-linear-depth/1` runs the frozen linear probe instead (DINOv2's linear depth head
on cached conv5 maps, or a ViT's last-block patch tokens with its [CLS] token, every candidate LR
in one pass: transfer/dense_probe/depth.py). The fine-tuning protocols take ResNets only; the
probes take ResNets and ViTs.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import logging
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from evaluate import harness, series
from pretrain import log_sinks
from results import bootstrap
from results.record import Task
from slurm import submit as slurm_submit
from transfer.dense_probe.depth import check_depth_inputs, run_frozen_depth
from transfer.dense_probe.protocols import DEPTH_PROBE_PROTOCOLS, ProbeProtocol, narrowed
from transfer.depth import protocols
from transfer.depth.augment import DepthAugmentation
from transfer.depth.data import DEPTH_SOURCES, build_depth_set
from transfer.depth.engine import PER_IMAGE_FILE, Job, run_job
from transfer.depth.metrics import depth_interval

DATASET = "nyu-v2"  # task.dataset of every depth record (the paper's Table 4 row)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DepthConfig:
    """One depth evaluation: a protocol preset plus what to run it on (defaults: App. D.6)."""

    ckpt: str  # export, training checkpoint, another library's checkpoint, or random:<arch>
    data: str | None = None  # folder of nyu_depth_v2_labeled.mat + splits.mat (test images)
    frames: str | None = None  # folder of frames from the raw sequences (the paper's training)
    train_source: str = "frames"  # or "labelled": the 795 (DEVIATION(depth-labelled-795))
    protocol: str = protocols.DEPTH_PROTOCOL
    seed: int = 0  # sample order, augmentation draws, decoder init, random:<arch> weights
    arch: str | None = None
    label: str | None = None
    records: str | None = None
    run_dir: str | None = None  # default: harness.work_dir, <runs>/evals/depth/...
    device: str | None = None
    num_workers: int = field(default_factory=harness.default_num_workers)
    ckpt_every_min: float = 10.0  # minutes between checkpoints: what a preemption can lose
    max_steps: int | None = None  # shorten: training steps
    batch_size: int | None = None  # the LR scales linearly with it (base 0.16 at 256)
    lr: float | None = None  # the peak LR itself (default: 0.16 x batch / 256)
    crop: tuple[int, int] | None = None  # (H, W) of the centre crop (default 228 304)
    log_to: str = ""  # step lines also to tensorboard, wandb (log_sinks.add_log_argument)
    epochs: int | None = None  # frozen-linear-depth*: epochs over the cached features
    lrs: tuple[float, ...] | None = None  # frozen-linear-depth*: candidate LRs
    heldout: int | None = None  # frozen-linear-depth*: training images held out to choose
    cache_dir: str | None = None  # frozen-linear-depth*: feature cache (evaluate/features.py's)
    view_size: int | None = None  # frozen-linear-depth*: shorter side of the view (default 480)


ALL_PROTOCOLS = (*protocols.PROTOCOLS, *DEPTH_PROBE_PROTOCOLS)
PROBE_ONLY = ("epochs", "lrs", "heldout", "cache_dir", "view_size")
# the refusal's alternatives: a ViT is read by the probes (a ResNet is taken by every protocol)
VIT_DEPTH = "for a ViT use --protocol frozen-linear-depth/1 (the frozen linear probe)"
FINETUNE_ONLY = ("max_steps", "lr", "crop")


def resolve(config: DepthConfig) -> tuple[protocols.DepthProtocol | ProbeProtocol, float | None]:
    """(protocol with the config's changes and its recorded name, peak LR; None: a probe)."""
    if config.protocol not in ALL_PROTOCOLS:
        raise harness.InputError(
            f"unknown protocol {config.protocol!r}; use one of {', '.join(ALL_PROTOCOLS)}"
        )
    log_sinks.check_log_to(config.log_to)
    if config.train_source not in DEPTH_SOURCES:
        raise harness.InputError(f"--train-source must be one of {DEPTH_SOURCES}")
    probe = config.protocol in DEPTH_PROBE_PROTOCOLS
    wrong = [n for n in (FINETUNE_ONLY if probe else PROBE_ONLY) if getattr(config, n) is not None]
    if wrong:
        flags = ", ".join("--" + name.replace("_", "-") for name in wrong)
        raise harness.InputError(f"{flags} do(es) not apply to {config.protocol}")
    if probe:
        return resolve_probe(config), None
    preset = protocols.PROTOCOLS[config.protocol]()
    settings = replace(preset, train_source=config.train_source)
    if config.max_steps is not None:
        settings = replace(settings, iterations=config.max_steps)
    if config.batch_size is not None:
        settings = replace(settings, batch_size=config.batch_size)
    if config.crop is not None:
        settings = replace(settings, aug=replace(settings.aug, crop=tuple(config.crop)))
    if settings.iterations < 1 or settings.batch_size < 1 or min(settings.aug.crop) < 32:
        raise harness.InputError("--max-steps and --batch-size must be positive, --crop >= 32")
    lr = settings.peak_lr if config.lr is None else config.lr
    if not lr > 0:
        raise harness.InputError(f"--lr must be positive, not {lr}")
    name, version = preset.name.split("/")
    if settings.train_source == "labelled":
        name = protocols.LABELLED_NAME.split("/")[0]
    if replace(settings, train_source=preset.train_source) != preset or config.lr is not None:
        name += "-custom"
    return replace(settings, name=f"{name}/{version}"), lr


def resolve_probe(config: DepthConfig) -> ProbeProtocol:
    """A frozen-probe preset (its -labelled795 form with --train-source labelled) with the flags
    that apply to it; any change of a setting records `-custom`."""
    name = config.protocol
    if config.train_source == "labelled" and "labelled795" not in name:
        name = name.replace("frozen-linear-depth", "frozen-linear-depth-labelled795")
    if config.train_source == "frames" and "labelled795" in name:
        raise harness.InputError(f"{name} trains on the labelled images: --train-source labelled")
    preset = DEPTH_PROBE_PROTOCOLS[name]()
    settings = narrowed(
        preset,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lrs=config.lrs,
        seeds=(config.seed,),
        heldout=config.heldout,
        crop=config.view_size,
    )
    values = (settings.schedule.epochs, settings.schedule.batch_size, settings.heldout + 1)
    if min(values) < 1 or settings.crop < 1 or not settings.lrs or min(settings.lrs) <= 0:
        raise harness.InputError("--epochs, --batch-size, --view-size and --lrs must be positive")
    if replace(settings, seeds=preset.seeds) != preset:
        stem, version = settings.name.split("/")
        settings = replace(settings, name=f"{stem}-custom/{version}")
    return settings


def train_source_of(settings) -> str:
    """ "frames" or "labelled": what trains the model of `settings` (a fine-tune or a probe)."""
    if isinstance(settings, ProbeProtocol):
        return "frames" if settings.train_split == "frames" else "labelled"
    return settings.train_source


def load_data(config: DepthConfig, settings):
    """(training set, the 654 test images), both opened and checked before training."""
    if train_source_of(settings) == "frames" and config.frames is None:
        raise harness.InputError(
            f"{config.protocol} trains on frames from the raw sequences: pass --frames with "
            "their folder (cleinc/bts's sync/), or --train-source labelled to train on the 795 "
            "labelled images (a deviation, recorded as such)"
        )
    test = build_depth_set("labelled", config.data, "test")
    if train_source_of(settings) == "frames":
        return build_depth_set("frames", config.frames, "train"), test
    return build_depth_set("labelled", config.data, "train"), test


def run_protocol(config: DepthConfig, settings, lr: float, inputs: harness.EvalInputs):
    """(metrics, selection, (intervals, examples)) of one run."""
    job = Job(
        protocol=replace(settings, aug=checkpoint_normalisation(settings, inputs)),
        lr=lr,
        seed=config.seed,
        train_set=inputs.train_set,
        eval_set=inputs.eval_set,
        run_dir=Path(inputs.work_dir) / f"lr{lr:g}-seed{config.seed}",
        weights_sha256=inputs.metadata["weights_sha256"],
        device=str(inputs.device),
        num_workers=config.num_workers,
        ckpt_every_min=config.ckpt_every_min,
        log_to=config.log_to,
    )
    result = run_job(job, inputs.encoder)
    metrics = {name: result[name] for name in ("delta1", "delta2", "delta3", "rms", "rel", "log10")}
    selection = {
        "lr": lr,
        "chosen_on": "given",
        "train_source": settings.train_source,
        "train_set": [job.train_set.name, job.train_set.split],
        "train_images": len(job.train_set),
        "eval_images": len(job.eval_set),
        "eval_ids_sha256": job.eval_set.fingerprint(),
        "iterations": settings.iterations,
        "seconds_per_iteration": result["seconds_per_iteration"],
        "run_dir": str(job.run_dir.resolve()),
        "deviations": ["depth-labelled-795"] if settings.train_source == "labelled" else [],
        "samples": result["samples"],  # the first test images for the report (results/samples.py)
    }
    return metrics, selection, depth_uncertainty(job.run_dir / PER_IMAGE_FILE)


def run_probe_protocol(config: DepthConfig, settings: ProbeProtocol, inputs) -> tuple:
    """(metrics, selection, (intervals, examples)) of a frozen depth probe."""
    metrics, selection = run_frozen_depth(settings, inputs, config.num_workers, config.log_to)
    source = train_source_of(settings)
    selection.update(
        train_source=source,
        train_set=[inputs.train_set.name, inputs.train_set.split],
        deviations=["depth-labelled-795"] if source == "labelled" else [],
    )
    return metrics, selection, depth_uncertainty(Path(inputs.work_dir) / PER_IMAGE_FILE)


def checkpoint_normalisation(settings, inputs: harness.EvalInputs) -> DepthAugmentation:
    """The protocol's views normalised with the checkpoint's mean and std (ImageNet's if the
    file states none: the augmentation's defaults)."""
    mean, std = harness.checkpoint_mean_std(inputs.metadata)
    return replace(settings.aug, mean=mean, std=std)


def depth_uncertainty(path: Path) -> tuple[dict, dict]:
    """(intervals, examples): each metric's 95% bootstrap interval over the test images, from
    the run's per-image pixel sums (named with their SHA-256 in the record)."""
    sums = np.load(path)
    intervals = {
        name: [round(low, 6), round(high, 6)] for name, (low, high) in depth_interval(sums).items()
    }
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    examples = {
        "count": len(sums),
        "bootstrap": bootstrap.settings(),
        "per_image": [{"file": str(path.resolve()), "sha256": digest}],
    }
    return intervals, examples


def load_inputs(config: DepthConfig, settings) -> harness.EvalInputs:
    """Device, encoder (left on the CPU: the run fine-tunes a copy), data and work directory,
    all validated before training starts: the protocol's backbone family, and a probe's view
    against a ViT's patch size."""
    inputs = harness.open_dense_inputs(
        config, config.seed, protocol=settings.name, takes=settings.backbone, alternatives=VIT_DEPTH
    )
    inputs.train_set, inputs.eval_set = load_data(config, settings)
    if isinstance(settings, ProbeProtocol):
        check_depth_inputs(settings, inputs)
    inputs.eval_split = "test"
    inputs.cache_dir = config.cache_dir
    inputs.work_dir = harness.work_dir(
        "depth",
        settings.name,
        inputs.metadata,
        ckpt=config.ckpt,
        records=config.records,
        run_dir=config.run_dir,
    )
    return inputs


def parse_config(argv: list[str] | None) -> DepthConfig:
    """DepthConfig from the command line (flags override the preset)."""
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="python -m transfer.depth",
        description=__doc__.split("\n")[0],
        epilog="Protocol settings and sources: transfer/depth/protocols.py.",
    )
    harness.add_input_arguments(parser, harness.CKPT_HELP)
    add = parser.add_argument
    add("--data", help="folder of nyu_depth_v2_labeled.mat and splits.mat (the 654 test images)")
    add("--frames", help="folder of frames from the raw sequences (cleinc/bts's sync/): training")
    add(
        "--train-source",
        choices=DEPTH_SOURCES,
        help="frames (default, the paper's) or labelled (the 795: a deviation)",
    )
    add(
        "--protocol",
        choices=list(ALL_PROTOCOLS),
        help="default: byol-paper-depth/1 (fine-tuning); frozen-linear-depth*: linear probes",
    )
    add("--seed", type=int, help="sample order, augmentation, decoder init (default 0)")
    add("--seeds", type=int, nargs="+", help=series.SEEDS_HELP)
    add(
        "--run-dir",
        help="checkpoints and the run's result; an existing one resumes (default: "
        "<runs>/evals/depth/<protocol>/<sha8>)",
    )
    add("--ckpt-every-min", type=float, help="minutes between checkpoints (default 10)")
    add("--max-steps", type=int, help="shorten: training steps (default 7,500)")
    add("--batch-size", type=int, help="images per step (default 256; the LR scales with it)")
    add("--lr", type=float, help="peak LR (default 0.16 x batch / 256)")
    add("--crop", type=int, nargs=2, metavar=("H", "W"), help="centre crop (default 228 304)")
    add("--epochs", type=int, help="frozen-linear-depth*: epochs over the cached features")
    add("--lrs", type=float, nargs="+", help="frozen-linear-depth*: candidate LRs")
    add("--heldout", type=int, help="frozen-linear-depth*: training images held out to choose")
    add("--cache-dir", help="frozen-linear-depth*: feature cache (default: $BYOL_BENCH_CACHE)")
    add(
        "--view-size",
        type=int,
        help="frozen-linear-depth*: shorter side of the whole-image view (default 480; a ViT's "
        "patch size must divide both sides)",
    )
    log_sinks.add_log_argument(parser)
    slurm_submit.add_slurm_arguments(parser)
    args = parser.parse_args(argv)
    if args.crop is not None:
        args.crop = tuple(args.crop)
    if args.lrs is not None:
        args.lrs = tuple(args.lrs)
    return harness.config_from_args(DepthConfig, args)


def evaluate_one(argv: list[str]) -> None:
    """The depth protocol for one seed and its record."""
    config = parse_config(argv)
    with harness.error_boundary():
        settings, lr = resolve(config)
        inputs = load_inputs(config, settings)
        task = Task("depth", DATASET, "test", settings.name)
        if lr is None:
            run = functools.partial(run_probe_protocol, config, settings, inputs)
        else:
            run = functools.partial(run_protocol, config, settings, lr, inputs)
        record, path = harness.record_run(inputs, config, task, run)
    m = record.metrics
    print(
        f"depth {record.task.protocol} {DATASET}/test [{record.checkpoint.label}, "
        f"{record.checkpoint.weights_sha256[:8]}]: delta1 {m['delta1']:.1f} delta2 "
        f"{m['delta2']:.1f} delta3 {m['delta3']:.1f} rms {m['rms']:.3f} rel {m['rel']:.3f} "
        f"(trained on {record.selection['train_source']}, lr {record.selection['lr']:g}) -> {path}"
    )


def main(argv: list[str] | None = None) -> None:
    """One run, or one per seed of --seeds: here in turn, or with --slurm one job each."""
    argv = sys.argv[1:] if argv is None else list(argv)
    with harness.error_boundary():
        argvs = series.per_seed_argvs(argv)
        if slurm_submit.submit_cli_if_requested(
            "transfer.depth", argv, tasks=series.per_seed_argvs
        ):
            return
    series.run_series(argvs, evaluate_one, what="seed")


if __name__ == "__main__":
    main()
