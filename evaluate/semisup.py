"""Semi-supervised evaluation: fine-tune the whole network on 1% or 10% of the training labels.

    python -m evaluate.semisup --ckpt RUN/exports/backbone-3f2a9c1d.pt --data /imagenet \\
        --fraction 1 --split-file imagenet_subsets/1percent.txt       # SimCLR's subset file
    python -m evaluate.semisup --ckpt RUN/exports/backbone-*.pt --dataset fmnist --fraction 10 \\
        --grid demo                                                    # minutes on a CPU
    python -m evaluate.semisup ... --slurm --profile mysite            # one array task per cell

The protocol is the SemiSupConfig docstring below; one fine-tune (a grid cell) is
evaluate/finetune.py. Every run ends with one result record per (checkpoint, fraction) holding
every cell's held-out accuracy, and a one-line summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from evaluate import harness, series
from evaluate.finetune import Cell, FinetuneSetup, classifier_hits, run_cell, trained_classifier
from evaluate.grid_jobs import submit_cells_then_final
from evaluate.metrics import percent, uncertainty
from evaluate.semisup_grids import GRIDS, grid_cells, protocol_name
from evaluate.splits import (
    SEMISUP_FRACTIONS,
    HeldoutSplit,
    LabelledSubset,
    balanced_indices,
    heldout_split,
    labelled_subset,
)
from pretrain import dist, log_sinks
from pretrain.backbones import vit_options
from pretrain.data import SubsetDataset
from results.record import Task
from slurm import submit as slurm_submit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SemiSupConfig:
    """Semi-supervised fine-tuning, protocols `byol-paper-1pct/1` and `byol-paper-10pct/1`
    (BYOL v3, App. C.1 and Table 2; Grill et al. 2020).

    Labels: SimCLR's fixed ImageNet subsets, 1% (12,811 images) and 10% (128,116), read from the
    split file and checked (count, every name under the training folder, every class covered,
    no duplicates; evaluate/splits.py). Other data sets: a seeded, class-balanced subset of
    floor(N x fraction / 100) images, written as a split file in the same format (its SHA-256
    goes into the record) and drawn outside the held-out split.
    Fine-tuning (evaluate/finetune.py): encoder + linear head, all weights trained, BN in train
    mode; SGD Nesterov momentum 0.9, no weight decay, batch 1024; random resized crop + flip;
    cosine LR decay (not stated in the paper). Grid: LR in {0.01, 0.02, 0.05, 0.1, 0.005} (at
    batch 1024; scaled linearly for other batches) x epochs in {30, 50}: ten full fine-tunes,
    each with its own schedule (a 30-epoch cell is never read off a 50-epoch run).
    Selection: on the held-out split of the training set (evaluate/splits.py: 10,009 ImageNet
    images, 10% elsewhere). The paper's local validation set is labelled training images outside
    the fine-tuning labels, so ours is too: images of the labelled subset are removed from it
    (about 1% / 10% of it on ImageNet; none elsewhere, where the subset is drawn outside it).
    Report: the chosen cell's network (not retrained) on the validation set, top-1 and top-5.

    Changing lrs, epochs, momentum, weight decay or heldout_max records protocol
    `custom-<f>pct/1`; `grid="demo"` is the small CPU grid, recorded as `demo-<f>pct/1`.
    """

    ckpt: str  # export, training checkpoint, torchvision state dict, or random:<arch>[:cifar]
    fraction: int = 1  # percent of the training labels: 1 or 10 (BYOL v3, Table 2)
    dataset: str = "imagenet"
    data: str | None = None
    split_file: str | None = None  # ImageNet: SimCLR's 1percent.txt / 10percent.txt
    arch: str | None = None  # foreign weights only; default: metadata, else inferred
    label: str | None = None  # checkpoint label in the record; default: the file's metadata
    grid: str = "paper"  # a key of GRIDS
    lrs: tuple[float, ...] = GRIDS["paper"].lrs  # BYOL v3, App. C.1, at batch 1024
    epochs: tuple[int, ...] = GRIDS["paper"].epochs[1]  # BYOL v3, App. C.1
    batch_size: int = 1024  # BYOL v3, App. C.1
    lr_batch_size: int = 1024  # the batch the lrs are stated for: lr x batch_size / 1024
    momentum: float = 0.9  # BYOL v3, App. C.1, Nesterov
    weight_decay: float = 0.0  # BYOL v3, App. C.1: none
    heldout_max: int | None = None  # compare cells on at most this many held-out images
    seed: int = 0  # subset (not ImageNet), held-out split, sample order, views, head init
    image_size: int | None = None  # default: the checkpoint's, else by data set (transforms.py)
    precision: str = "fp32"  # fp32 | bf16 (autocast, as pretraining)
    device: str | None = None  # default: cuda when available
    num_workers: int = field(default_factory=harness.default_num_workers)  # CPUs, at most 8
    records: str | None = None  # default: records/ beside the run dir of ckpt, else ./records
    run_dir: str | None = None  # the cells' checkpoints; default: harness.work_dir (not records/)
    ckpt_every_min: float = 10.0  # checkpoint a cell this often (and at every epoch end)
    log_to: str = ""  # each cell's log.jsonl step lines also to tensorboard, wandb
    cache_dir: str | None = None  # unused (fine-tuning has no frozen features to cache)


@dataclass(frozen=True)
class Plan:
    """The labelled subset, the held-out images and the cells of one run."""

    setup: FinetuneSetup
    cells: list[Cell]
    run_dir: Path
    subset: LabelledSubset
    heldout: HeldoutSplit
    heldout_indices: list[int]  # the held-out split minus subset images, capped at heldout_max


def make_plan(config: SemiSupConfig, inputs: harness.EvalInputs, info: dist.DistInfo) -> Plan:
    """Read or draw the subset, choose the held-out images, fix the settings every cell shares."""
    train_set, splits_dir = inputs.train_set, inputs.records_dir / "splits"
    heldout = heldout_split(train_set, seed=config.seed, out_dir=splits_dir)
    subset = labelled_subset(
        train_set,
        config.fraction,
        seed=config.seed,
        out_dir=splits_dir,
        split_file=config.split_file,
        exclude=heldout.heldout,
    )
    held = compared_heldout(config, train_set, heldout, subset)
    if len(subset.indices) < 2 * info.world_size or not held:
        raise harness.InputError(
            f"the {config.fraction}% subset has {len(subset.indices)} images and the held-out "
            f"split {len(held)}: too few to fine-tune and compare; use a larger data set"
        )
    metadata, device = inputs.metadata, inputs.device
    if device.type == "cuda" and info.world_size > 1:
        device = torch.device("cuda", info.local_rank)
    key = {  # what must match for a run dir's cells to be resumed
        "weights_sha256": metadata["weights_sha256"],
        "subset_sha256": subset.sha256,
        "heldout_sha256": heldout.sha256,
        "heldout_images": len(held),
        "batch_size": config.batch_size,
        "lr_batch_size": config.lr_batch_size,
        "momentum": config.momentum,
        "weight_decay": config.weight_decay,
        "seed": config.seed,
        "precision": config.precision,
        "preprocessing": dataclasses.asdict(inputs.preprocessing),
    }
    setup = FinetuneSetup(
        arch=metadata["arch"],
        cifar_stem=bool(metadata.get("cifar_stem")),
        init_state={k: v.detach().cpu().clone() for k, v in inputs.encoder.state_dict().items()},
        num_classes=train_set.num_classes,
        train_images=SubsetDataset(train_set, subset.indices),
        heldout_images=SubsetDataset(train_set, held),
        preprocessing=inputs.preprocessing,
        batch_size=config.batch_size,
        lr_scale=config.batch_size / config.lr_batch_size,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        seed=config.seed,
        precision=config.precision,
        num_workers=config.num_workers,
        ckpt_every_min=config.ckpt_every_min,
        log_to=log_sinks.check_log_to(config.log_to),
        device=device,
        info=info,
        key=key,
        padding=metadata.get("padding") or "torchvision",
        stem_padding=metadata.get("stem_padding"),
        vit_options=vit_options(metadata),
    )
    return Plan(setup, grid_cells(config), work_dir(config, metadata), subset, heldout, held)


def work_dir(config: SemiSupConfig, metadata: dict) -> Path:
    """`--run-dir`, else <runs>/evals/semisup/<protocol>/<sha8>-<data set>-seed<seed>."""
    variant = f"{config.dataset}-seed{config.seed}"
    return harness.work_dir(
        "semisup",
        protocol_name(config),
        metadata,
        ckpt=config.ckpt,
        records=config.records,
        run_dir=config.run_dir,
        variant=variant,
    )


def compared_heldout(
    config: SemiSupConfig, train_set, heldout: HeldoutSplit, subset: LabelledSubset
) -> list[int]:
    """The held-out images the cells are compared on: outside the labelled subset, at most
    `heldout_max` of them (a seeded class-balanced draw)."""
    labelled = set(subset.indices)
    held = [index for index in heldout.heldout if index not in labelled]
    if config.heldout_max and len(held) > config.heldout_max:
        targets = [train_set.targets[index] for index in held]
        chosen = balanced_indices(targets, config.heldout_max, config.seed)
        held = [held[position] for position in chosen]
    return held


def run_grid(config: SemiSupConfig, inputs: harness.EvalInputs, plan: Plan) -> tuple:
    """Every cell (finished ones are read back), the best on held-out, scored on validation:
    (metrics, selection, (bootstrap intervals, their per-example data))."""
    results = [run_cell(cell, plan.setup, plan.run_dir / cell.name) for cell in plan.cells]
    finite = [i for i, result in enumerate(results) if result["heldout_top1"] is not None]
    if not finite:
        raise RuntimeError(f"every cell of the grid diverged (non-finite loss); see {plan.run_dir}")
    best = max(finite, key=lambda i: (results[i]["heldout_top1"], -i))  # ties: the first listed
    cell = plan.cells[best]
    model = trained_classifier(cell, plan.setup, plan.run_dir / cell.name)
    hits = classifier_hits(model, inputs.eval_set, plan.setup, f"{inputs.eval_split} {cell.name}")
    test = {f"top{k}": percent(hit.sum().item(), len(hit)) for k, hit in hits.items()}
    candidates = [
        {key: result[key] for key in ("lr", "epochs", "heldout_top1", "heldout_top5", "steps")}
        | {
            "lr_scaled": result["lr"] * plan.setup.lr_scale,
            "diverged_at_step": result["diverged_at_step"],
        }
        for result in results
    ]
    selection = {
        "lr": cell.lr,
        "lr_scaled": cell.lr * plan.setup.lr_scale,
        "epochs": cell.epochs,
        "batch_size": config.batch_size,
        "candidates": candidates,
        "chosen_on": f"heldout-{len(plan.heldout_indices)}",
        "heldout_split_file": str(plan.heldout.path.resolve()),
        "heldout_split_sha256": plan.heldout.sha256,
        "heldout_subset_images_removed": len(plan.heldout.heldout) - len(plan.heldout_indices),
        "labelled_images": len(plan.subset.indices),
        "split_file": str(plan.subset.path.resolve()),
        "split_file_sha256": plan.subset.sha256,
        "split_source": plan.subset.source,
        "retrained": False,  # the chosen cell's network is the one scored
        "run_dir": str(plan.run_dir.resolve()),
        "world_size": plan.setup.info.world_size,
    }
    intervals = uncertainty({"top1": hits[1], "top5": hits[5]})
    return {"top1": test["top1"], "top5": test["top5"]}, selection, intervals


def parse_config(argv: list[str] | None) -> tuple[SemiSupConfig, int | None]:
    """SemiSupConfig from the command line (the grid's values where no flag overrides them) and
    the `--cell` index (None: the whole grid)."""
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="python -m evaluate.semisup",
        description=SemiSupConfig.__doc__.split("\n")[0],
        epilog="Protocol: see the SemiSupConfig docstring in evaluate/semisup.py.",
    )
    harness.add_common_arguments(parser)
    add = parser.add_argument
    add("--fraction", type=int, required=True, help="percent of labels: 1 or 10 (BYOL Table 2)")
    add("--seeds", type=int, nargs="+", help=series.SEEDS_HELP)
    add(
        "--split-file",
        help="one training image name per line; ImageNet: SimCLR's imagenet_subsets/"
        "1percent.txt or 10percent.txt (default elsewhere: a seeded subset, written out)",
    )
    add(
        "--grid",
        choices=list(GRIDS),
        help="paper (default: 5 LRs x {30, 50} epochs, batch 1024) or demo (a CPU-sized grid, "
        "recorded as demo-<f>pct/1)",
    )
    fast_help = "the cheap recorded variant: the demo grid (the same as --grid demo)"
    add("--fast", action="store_true", default=None, help=fast_help)
    add("--lrs", type=float, nargs="+", help="candidate LRs at batch 1024 (default: the grid's)")
    add("--epochs", type=int, nargs="+", help="candidate epoch counts (default: the grid's)")
    add("--heldout-max", type=int, help="compare cells on at most N held-out images")
    add("--precision", choices=["fp32", "bf16"], help="bf16: autocast (default fp32)")
    add(
        "--run-dir",
        help="where the cells' checkpoints go; an existing one resumes (default: "
        "<runs>/evals/semisup/<protocol>/<sha8>-<data set>-seed<seed>, <runs> = the parent "
        "of --ckpt's run dir, else of --records, else ./runs)",
    )
    add("--ckpt-every-min", type=float, help="checkpoint interval within an epoch (default 10)")
    add("--cell", type=int, help="run only this cell of the grid (0-based; SLURM array tasks)")
    log_sinks.add_log_argument(parser)
    args = parser.parse_args(argv)
    if args.fraction not in SEMISUP_FRACTIONS:
        parser.error(
            f"--fraction {args.fraction}: the protocol uses SimCLR's 1% and 10% subsets; pass "
            "--fraction 1 or --fraction 10"
        )
    if args.fast:
        if args.grid not in (None, "demo"):
            parser.error("--fast is --grid demo; it cannot be combined with --grid paper")
        args.grid = "demo"
    grid = GRIDS[args.grid or "paper"]
    epochs = grid.epochs[args.fraction]
    defaults = {"lrs": grid.lrs, "epochs": epochs, "batch_size": grid.batch_size}
    for name, value in {**defaults, "heldout_max": grid.heldout_max}.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.lrs, args.epochs = tuple(args.lrs), tuple(args.epochs)
    return harness.config_from_args(SemiSupConfig, args), args.cell


def check_config(config: SemiSupConfig, cell: int | None) -> None:
    """Refuse settings that cannot run (InputError, one sentence)."""
    if not config.lrs or min(config.lrs) <= 0 or not config.epochs or min(config.epochs) < 1:
        raise harness.InputError("--lrs must be positive and --epochs at least 1")
    if config.batch_size < 1 or config.num_workers < 0:
        raise harness.InputError("--batch-size must be positive and --num-workers not negative")
    cells = len(grid_cells(config))
    if cell is not None and not 0 <= cell < cells:
        raise harness.InputError(f"--cell {cell}: the grid has cells 0..{cells - 1}")


def submit_grid_if_requested(argv: list[str] | None) -> bool:
    """`--slurm`: one array task per cell (`--cell K`), then this command again as a job that
    starts when they all succeed: it reads their results, picks one and writes the record."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    slurm_submit.add_slurm_arguments(parser)
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else list(argv))
    slurm_submit.check_slurm_flags(args)
    if not args.slurm:
        return False
    config, cell = parse_config(rest)  # bad flags fail here, not in the jobs
    check_config(config, cell)
    if cell is not None:
        raise harness.InputError(
            "--cell and --slurm do not go together: --slurm submits every cell"
        )
    command = [sys.executable, "-m", "evaluate.semisup", *rest]
    submit_cells_then_final(args, command, len(grid_cells(config)), "evaluate-semisup")
    return True


def main(argv: list[str] | None = None) -> None:
    """The grid once, or once per seed of --seeds (series.per_seed_argvs): here in turn, or
    with --slurm one grid (array + final job) per seed."""
    argv = sys.argv[1:] if argv is None else list(argv)
    with harness.error_boundary():
        argvs = series.per_seed_argvs(argv)
        if all([submit_grid_if_requested(one) for one in argvs]):  # --slurm: the grid(s) as jobs
            return
    series.run_series(argvs, evaluate_one, what="seed")


def evaluate_one(argv: list[str]) -> None:
    """The grid of one seed and its record (`--cell K`: that cell only, no record)."""
    config, cell = parse_config(argv)
    protocol = protocol_name(config)
    with harness.error_boundary():
        check_config(config, cell)
        info = dist.init_from_env(harness.pick_device(config.device).type)
        inputs = harness.load_inputs(config)
        plan = make_plan(config, inputs, info)
        if cell is not None:  # one array task: fine-tune, score on held-out, no record
            result = run_cell(plan.cells[cell], plan.setup, plan.run_dir / plan.cells[cell].name)
            print(f"semisup cell {result['cell']}: held-out top1 {result['heldout_top1']}")
            return
        if not info.is_main:  # other ranks train and score; rank 0 writes the record
            run_grid(config, inputs, plan)
            return
        task = Task("semisup", config.dataset, inputs.eval_split, protocol)
        record, path = harness.record_run(
            inputs, config, task, lambda: run_grid(config, inputs, plan)
        )
    selection = record.selection
    print(
        f"semisup {protocol} {record.task.dataset}/{record.task.split} "
        f"[{record.checkpoint.label}, {record.checkpoint.weights_sha256[:8]}]: "
        f"top1 {record.metrics['top1']:.2f} top5 {record.metrics['top5']:.2f} "
        f"(lr {selection['lr']:g} at batch 1024, {selection['epochs']} epochs, "
        f"{selection['labelled_images']} labelled images, chosen on {selection['chosen_on']}) "
        f"-> {path}"
    )


if __name__ == "__main__":
    main()
