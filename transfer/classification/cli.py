"""Transfer classification on BYOL v3's 12 data sets (Table 3): one record per data set.

    python -m transfer.classification --ckpt RUN/exports/backbone-3f2a9c1d.pt --dataset all \\
        --data /datasets                          # the 12 releases side by side, usual folder names
    python -m transfer.classification --ckpt ... --dataset food101 --data /datasets/food-101
    python -m transfer.classification --ckpt ... --dataset dtd pets \\
        --protocol byol-transfer-finetune/1
    python -m transfer.classification --ckpt ... --dataset all --data /datasets --slurm --profile P

Protocols: `byol-transfer-linear/1` (default; logistic regression on frozen features, App. D.2:
transfer/classification/linear.py) and `byol-transfer-finetune/1` (App. D.3:
transfer/classification/finetune.py; `--grid demo` is a small CPU grid recorded under its own
name). Readers: transfer/classification/releases.py, each release exactly as its creators ship
it. Selection splits: transfer/classification/splits.py. Several data sets run in turn here, or
as a SLURM job array with one task per data set.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field

from evaluate import harness, series
from evaluate.transforms import Preprocessing
from pretrain import dist, log_sinks
from pretrain.small_inputs import single_position_convs, use_single_position_convs
from results.record import Task
from slurm import submit as slurm_submit
from transfer.classification import finetune, finetune_grids, linear, logistic
from transfer.classification.releases import PAPER_CLASSES, TRANSFER_DATASETS, read_release
from transfer.classification.splits import selection_splits

FINETUNE = finetune_grids.protocol_name("paper")  # byol-transfer-finetune/1
PROTOCOLS = (linear.PROTOCOL, FINETUNE)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TransferConfig:
    """One transfer-classification evaluation of one checkpoint on one data set (BYOL v3,
    App. D.1-D.3); the protocols are described in linear.py and finetune.py."""

    ckpt: str  # export, training checkpoint, another library's checkpoint, or random:<arch>
    dataset: str = "all"  # one of TRANSFER_DATASETS (`all`: each, one record each)
    data: str | None = None  # the release, or the folder holding the releases side by side
    protocol: str = linear.PROTOCOL  # or byol-transfer-finetune/1
    grid: str = "paper"  # fine-tuning: a key of finetune_grids.GRIDS (demo: a small CPU grid)
    precision: str = "fp32"  # fine-tuning: fp32 | bf16 (autocast)
    ckpt_every_min: float = 10.0  # fine-tuning: minutes between checkpoints of a cell
    log_to: str = ""  # fine-tuning: each cell's log.jsonl lines also to tensorboard, wandb
    penalties: tuple[float, ...] = logistic.PENALTIES  # App. D.2: 45 values in [1e-6, 1e5]
    max_iter: int = logistic.MAX_ITER  # L-BFGS iterations per fit
    image_size: int = linear.IMAGE_SIZE  # App. D.2, D.3: 224
    batch_size: int = 256  # images per feature-extraction batch (does not change the result)
    seed: int = 0  # held-out draws, Caltech-101's train/test draw, random:<arch> weights
    arch: str | None = None
    label: str | None = None
    records: str | None = None
    run_dir: str | None = None
    device: str | None = None
    num_workers: int = field(default_factory=harness.default_num_workers)
    cache_dir: str | None = None


def protocol_name(config: TransferConfig) -> str:
    """The recorded protocol: the paper's name, <name>-custom/1 when a setting differs, and the
    fine-tuning demo grid's own name (finetune_grids.protocol_name)."""
    if config.protocol == FINETUNE:
        name = finetune_grids.protocol_name(config.grid)
        custom = config.grid == "paper" and config.image_size != linear.IMAGE_SIZE
        return name.replace("/1", "-custom/1") if custom else name
    paper = (
        config.penalties == logistic.PENALTIES
        and config.max_iter == logistic.MAX_ITER
        and config.image_size == linear.IMAGE_SIZE
    )
    return linear.PROTOCOL if paper else linear.CUSTOM_PROTOCOL


def check_config(config: TransferConfig) -> None:
    if config.dataset not in TRANSFER_DATASETS:
        raise harness.InputError(
            f"unknown data set {config.dataset!r}; use one of {', '.join(TRANSFER_DATASETS)} or all"
        )
    if config.data is None:
        raise harness.InputError("--data DIR is required: the release, or the folder of releases")
    if config.protocol not in PROTOCOLS:
        raise harness.InputError(f"unknown --protocol {config.protocol!r}; use one of {PROTOCOLS}")
    if config.image_size < 1 or config.batch_size < 1 or config.max_iter < 1:
        raise harness.InputError("--image-size, --batch-size and --max-iter must be positive")
    if not config.penalties or min(config.penalties) <= 0:
        raise harness.InputError("--penalties needs one or more positive values")
    if config.grid not in finetune_grids.GRIDS:
        raise harness.InputError(
            f"unknown --grid {config.grid!r}; use {list(finetune_grids.GRIDS)}"
        )
    if config.precision not in ("fp32", "bf16"):
        raise harness.InputError(f"--precision is fp32 or bf16, not {config.precision!r}")
    log_sinks.check_log_to(config.log_to)


def load_inputs(config: TransferConfig, release) -> harness.EvalInputs:
    """Device, frozen encoder on it, the test view: resize 224 (bicubic) + centre crop 224 for
    the logistic regression (App. D.2), resize 256 + crop 224 for fine-tuning (App. D.3)."""
    inputs = harness.open_inputs(config, config.seed)
    mean, std = harness.checkpoint_mean_std(inputs.metadata)
    ratio = None if config.protocol == FINETUNE else 1.0
    inputs.preprocessing = Preprocessing(config.image_size, mean, std, test_resize_ratio=ratio)
    inputs.cache_dir = config.cache_dir
    convs = single_position_convs(inputs.encoder, config.image_size)  # exact; small sizes only
    use_single_position_convs([inputs.encoder], convs)
    inputs.encoder = inputs.encoder.to(inputs.device)
    inputs.train_set, inputs.eval_set, inputs.eval_split = release.train, release.test, "test"
    inputs.work_dir = harness.work_dir(
        "transfer-cls",
        protocol_name(config),
        inputs.metadata,
        ckpt=config.ckpt,
        records=config.records,
        run_dir=config.run_dir,
        variant=f"{release.name}-seed{config.seed}",
    )
    if len(release.train.classes) != PAPER_CLASSES[release.name]:
        log.warning(
            "%s has %d classes here, %d in the paper (Table 10): not comparable with Table 3",
            release.name,
            len(release.train.classes),
            PAPER_CLASSES[release.name],
        )
    return inputs


def run_protocol(config: TransferConfig, inputs, release, splits, cell=None):
    """(metrics, selection) of config.protocol on one release; with `cell`, one grid cell's
    result (a SLURM array task of the fine-tuning grid)."""
    if config.protocol == FINETUNE:
        multilabel = release.metric == "map11"
        outcome = finetune.run_transfer_finetune(
            inputs,
            splits.train,
            splits.val,
            splits.test,
            release.metric,
            (lambda images: images.label_matrix.long()) if multilabel else None,
            config.grid,
            inputs.work_dir,
            seed=config.seed,
            num_workers=config.num_workers,
            precision=config.precision,
            cell=cell,
            ckpt_every_min=config.ckpt_every_min,
            log_to=config.log_to,
        )
        if cell is not None:
            return outcome
        metrics, selection, intervals = outcome
        metrics = {release.metric: metrics[f"test_{release.metric}"]}
        selection.update(split_file=splits.split_file, split_sha256=splits.split_sha256)
        return metrics, {**selection, "chosen_on": splits.val_source}, intervals
    return linear.run_linear(
        inputs,
        release,
        splits,
        penalties=config.penalties,
        max_iter=config.max_iter,
        batch_size=config.batch_size,
        workers=config.num_workers,
    )


def evaluate_one(config: TransferConfig, cell: int | None = None) -> None:
    """The protocol on one data set and its record (a fine-tuning `cell`: that cell only)."""
    with harness.error_boundary():
        check_config(config)
        if cell is not None and config.protocol != FINETUNE:
            raise harness.InputError(f"--cell is a cell of the {FINETUNE} grid")
        info = dist.init_from_env(harness.pick_device(config.device).type)
        release = read_release(config.dataset, config.data, seed=config.seed)
        inputs = load_inputs(config, release)
        splits = selection_splits(release, seed=config.seed, out_dir=inputs.records_dir / "splits")
        if cell is not None or not info.is_main:  # an array task, or a rank that is not rank 0
            result = run_protocol(config, inputs, release, splits, cell)
            if cell is not None:
                print(f"transfer-cls {config.dataset} cell {cell}: {result}")
            return

        def run() -> tuple:
            metrics, selection, *uncertainty = run_protocol(config, inputs, release, splits)
            return metrics, {**selection, "release_notes": list(release.notes)}, *uncertainty

        task = Task("transfer-cls", release.name, "test", protocol_name(config))
        record, path = harness.record_run(inputs, config, task, run)
    ((metric, value),) = record.metrics.items()
    chosen = record.selection
    setting = (
        f"lr {chosen['lr']:g}, wd {chosen['weight_decay']:g}"
        if config.protocol == FINETUNE
        else f"penalty {chosen['penalty']:.3g}"
    )
    print(
        f"transfer-cls {task.protocol} {task.dataset}/test [{record.checkpoint.label}, "
        f"{record.checkpoint.weights_sha256[:8]}]: {metric} {value:.2f} ({setting}, chosen on "
        f"{chosen['chosen_on']}) -> {path}"
    )


def per_run_argvs(argv: list[str]) -> list[list[str]]:
    """One argument list per data set of --dataset and seed of --seeds."""
    return [one for dataset in per_dataset_argvs(argv) for one in series.per_seed_argvs(dataset)]


def per_dataset_argvs(argv: list[str]) -> list[list[str]]:
    """One argument list per data set of --dataset (`all`: the 12, in Table 3's order)."""
    names = _datasets(argv)
    if names is None:
        return [argv]
    rest = list(argv)
    if "--dataset" in argv:
        start = argv.index("--dataset")
        rest = argv[:start] + argv[start + 1 + len(_values_after(argv, start)) :]
    return [[*rest, "--dataset", name] for name in names]


def _values_after(argv: list[str], start: int) -> list[str]:
    values = []
    for item in argv[start + 1 :]:
        if item.startswith("--"):
            break
        values.append(item)
    return values


def _datasets(argv: list[str]) -> list[str] | None:
    if "--dataset" not in argv:
        return list(TRANSFER_DATASETS)
    values = _values_after(argv, argv.index("--dataset"))
    if not values:
        return None  # argparse reports the missing value
    names = list(TRANSFER_DATASETS) if "all" in values else list(dict.fromkeys(values))
    unknown = [name for name in names if name not in TRANSFER_DATASETS]
    if unknown:
        raise harness.InputError(
            f"unknown data set {unknown[0]!r}; use {', '.join(TRANSFER_DATASETS)} or all"
        )
    return names


def parse_config(argv: list[str] | None) -> tuple[TransferConfig, int | None]:
    """(TransferConfig of one data set, --cell or None) from the command line."""
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="python -m transfer.classification",
        description=__doc__.split("\n")[0],
        epilog="Protocols: transfer/classification/linear.py and finetune.py; releases and "
        "their folder names: transfer/classification/releases.py.",
    )
    harness.add_input_arguments(parser, harness.CKPT_HELP)
    add = parser.add_argument
    add("--dataset", nargs="+", help=f"{', '.join(TRANSFER_DATASETS)} or all (default: all)")
    add("--data", help="the release's folder, or the folder holding the releases side by side")
    add("--protocol", choices=PROTOCOLS, help=f"default: {linear.PROTOCOL}")
    grids = list(finetune_grids.GRIDS)
    add("--grid", choices=grids, help=f"{FINETUNE}: the grid (default: paper; demo: CPU-sized)")
    add("--cell", type=int, help=f"{FINETUNE}: run only this grid cell (a SLURM array task)")
    add("--precision", choices=["fp32", "bf16"], help=f"{FINETUNE}: default fp32")
    add("--ckpt-every-min", type=float, help=f"{FINETUNE}: minutes between checkpoints (10)")
    add("--penalties", type=float, nargs="+", help="l2 penalties to choose from (default: 45)")
    add("--max-iter", type=int, help=f"L-BFGS iterations per fit (default {logistic.MAX_ITER})")
    add("--image-size", type=int, help="input size (default 224: the paper's)")
    add("--batch-size", type=int, help="images per feature-extraction batch (default 256)")
    add("--seed", type=int, help="held-out draws and Caltech-101's train/test draw (default 0)")
    add("--seeds", type=int, nargs="+", help=series.SEEDS_HELP)
    add(
        "--run-dir",
        help="work directory (default: <runs>/evals/transfer-cls/<protocol>/"
        "<sha8>-<data set>-seed<seed>)",
    )
    add("--cache-dir", help="feature cache ($BYOL_BENCH_CACHE, else ~/.cache/byol-bench/features)")
    log_sinks.add_log_argument(parser)
    slurm_submit.add_slurm_arguments(parser)
    args = parser.parse_args(argv)
    if args.dataset is not None:
        if len(args.dataset) != 1:
            raise harness.InputError("one data set per evaluation (per_dataset_argvs splits them)")
        args.dataset = args.dataset[0]
    if args.penalties is not None:
        args.penalties = tuple(args.penalties)
    return harness.config_from_args(TransferConfig, args), args.cell


def submit_if_requested(argv: list[str], configs: list[TransferConfig], cell) -> bool:
    """`--slurm`: the linear protocol as one job per data set (a job array); fine-tuning as one
    grid per data set (an array task per cell, then the retrain and record, afterok)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    slurm_submit.add_slurm_arguments(parser)
    args, _ = parser.parse_known_args(argv)
    if args.slurm and cell is not None:
        raise harness.InputError(
            "--cell and --slurm do not go together: --slurm submits every cell"
        )
    if configs[0].protocol != FINETUNE:
        return slurm_submit.submit_cli_if_requested(
            "transfer.classification", argv, tasks=per_run_argvs
        )
    slurm_submit.check_slurm_flags(args)
    if not args.slurm:
        return False
    for config, one in zip(configs, per_run_argvs(argv), strict=True):
        _, rest = parser.parse_known_args(one)
        command = [sys.executable, "-m", "transfer.classification", *rest]
        name = f"transfer-classification-{config.dataset}-seed{config.seed}"
        finetune.submit_finetune_grid(args, command, config.grid, name)
    return True


def main(argv: list[str] | None = None) -> None:
    """Each data set of --dataset in turn (a failed one does not stop the others), or with
    --slurm as jobs (submit_if_requested)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    with harness.error_boundary():
        parsed = [parse_config(one) for one in per_run_argvs(argv)]
        configs, cell = [config for config, _ in parsed], parsed[0][1]
        if cell is not None and len(configs) > 1:
            raise harness.InputError("--cell runs one cell of one data set: name one --dataset")
        for config in configs:  # every release readable before the first one starts
            check_config(config)
            read_release(config.dataset, config.data, seed=config.seed)
        if submit_if_requested(argv, configs, cell):
            return
    failed = []
    for number, config in enumerate(configs, 1):
        if len(configs) > 1:
            print(f"run {number}/{len(configs)}: {config.dataset}, seed {config.seed}", flush=True)
        try:
            evaluate_one(config, cell)
        except SystemExit as exit:
            if exit.code not in (0, None):
                print(exit.code if isinstance(exit.code, str) else "", file=sys.stderr)
                failed.append(f"{config.dataset} (seed {config.seed})")
    if failed:
        sys.exit(f"error: {len(failed)} of {len(configs)} runs failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
