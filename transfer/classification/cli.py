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

from evaluate import harness
from evaluate.transforms import Preprocessing
from pretrain.data import dataset_stats
from pretrain.small_inputs import single_position_convs, use_single_position_convs
from results.record import Task
from slurm import submit as slurm_submit
from transfer.classification import linear, logistic
from transfer.classification.releases import PAPER_CLASSES, TRANSFER_DATASETS, read_release
from transfer.classification.splits import selection_splits

PROTOCOLS = (linear.PROTOCOL, "byol-transfer-finetune/1")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TransferConfig:
    """One transfer-classification evaluation of one checkpoint on one data set (BYOL v3,
    App. D.1-D.3); the protocols are described in linear.py and finetune.py."""

    ckpt: str  # export, training checkpoint, another library's checkpoint, or random:<arch>
    dataset: str = "all"  # one of TRANSFER_DATASETS (`all`: each, one record each)
    data: str | None = None  # the release, or the folder holding the releases side by side
    protocol: str = linear.PROTOCOL
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
    """The recorded protocol: the paper's name, or <name>-custom/1 when a setting differs."""
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


def load_inputs(config: TransferConfig, release) -> harness.EvalInputs:
    """Device, frozen encoder on it, the test view (resize 224 bicubic, centre crop 224)."""
    inputs = harness.open_inputs(config, config.seed)
    known = inputs.metadata.get("preprocessing") or {}
    mean, std = (known["mean"], known["std"]) if known else dataset_stats("imagenet")
    inputs.preprocessing = Preprocessing(
        config.image_size, tuple(mean), tuple(std), test_resize_ratio=1.0
    )
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
        variant=release.name,
    )
    if len(release.train.classes) != PAPER_CLASSES[release.name]:
        log.warning(
            "%s has %d classes here, %d in the paper (Table 10): not comparable with Table 3",
            release.name,
            len(release.train.classes),
            PAPER_CLASSES[release.name],
        )
    return inputs


def evaluate_one(config: TransferConfig) -> None:
    """The protocol on one data set and its record."""
    with harness.error_boundary():
        check_config(config)
        release = read_release(config.dataset, config.data, seed=config.seed)
        inputs = load_inputs(config, release)
        splits = selection_splits(release, seed=config.seed, out_dir=inputs.records_dir / "splits")

        def run() -> tuple[dict, dict]:
            metrics, selection = linear.run_linear(
                inputs,
                release,
                splits,
                penalties=config.penalties,
                max_iter=config.max_iter,
                batch_size=config.batch_size,
                workers=config.num_workers,
            )
            return metrics, {**selection, "release_notes": list(release.notes)}

        task = Task("transfer-cls", release.name, "test", protocol_name(config))
        record, path = harness.record_run(inputs, config, task, run)
    ((metric, value),) = record.metrics.items()
    print(
        f"transfer-cls {task.protocol} {task.dataset}/test [{record.checkpoint.label}, "
        f"{record.checkpoint.weights_sha256[:8]}]: {metric} {value:.2f} (penalty "
        f"{record.selection['penalty']:.3g}, chosen on {record.selection['chosen_on']}) -> {path}"
    )


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


def parse_config(argv: list[str] | None) -> TransferConfig:
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
    add("--penalties", type=float, nargs="+", help="l2 penalties to choose from (default: 45)")
    add("--max-iter", type=int, help=f"L-BFGS iterations per fit (default {logistic.MAX_ITER})")
    add("--image-size", type=int, help="input size (default 224: the paper's)")
    add("--batch-size", type=int, help="images per feature-extraction batch (default 256)")
    add("--seed", type=int, help="held-out draws and Caltech-101's train/test draw (default 0)")
    add("--run-dir", help="work directory (default: <runs>/evals/transfer-cls/<protocol>/...)")
    add("--cache-dir", help="feature cache ($BYOL_BENCH_CACHE, else ~/.cache/byol-bench/features)")
    slurm_submit.add_slurm_arguments(parser)
    args = parser.parse_args(argv)
    if args.dataset is not None:
        if len(args.dataset) != 1:
            raise harness.InputError("one data set per evaluation (per_dataset_argvs splits them)")
        args.dataset = args.dataset[0]
    if args.penalties is not None:
        args.penalties = tuple(args.penalties)
    return harness.config_from_args(TransferConfig, args)


def main(argv: list[str] | None = None) -> None:
    """Each data set of --dataset in turn (a failed one does not stop the others), or with
    --slurm one job per data set (a job array)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    with harness.error_boundary():
        argvs = per_dataset_argvs(argv)
        configs = [parse_config(one) for one in argvs]
        for config in configs:  # every release readable before the first one starts
            check_config(config)
            read_release(config.dataset, config.data, seed=config.seed)
        if slurm_submit.submit_cli_if_requested(
            "transfer.classification", argv, tasks=per_dataset_argvs
        ):
            return
    failed = []
    for number, config in enumerate(configs, 1):
        if len(configs) > 1:
            print(f"data set {number}/{len(configs)}: {config.dataset}", flush=True)
        try:
            evaluate_one(config)
        except SystemExit as exit:
            if exit.code not in (0, None):
                print(exit.code if isinstance(exit.code, str) else "", file=sys.stderr)
                failed.append(config.dataset)
    if failed:
        sys.exit(f"error: {len(failed)} of {len(configs)} data sets failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
