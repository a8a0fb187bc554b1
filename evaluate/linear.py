"""Linear evaluation of a frozen encoder: the paper's probe, its LR sweep at the cost of one run.

    python -m evaluate.linear --ckpt RUN/exports/backbone-3f2a9c1d.pt --data /imagenet
    python -m evaluate.linear --ckpt RUN/exports/backbone-*.pt --dataset synthetic --fast
    python -m evaluate.linear --ckpt random:resnet18 --dataset fmnist --fast   # baseline

The protocol is the LinearConfig docstring below. Every run ends with one result record
(results/record.py) and a one-line summary.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

import torch

from evaluate import harness, series
from evaluate.dino_linear import DINO_VIT_FAST_PROTOCOL, DINO_VIT_PROTOCOL, use_dino_vit_features
from evaluate.heads import (
    Batches,
    LinearHeads,
    evaluate_heads,
    fit_heads,
    head_scores,
    tensor_batches,
)
from evaluate.metrics import topk_hits, uncertainty
from evaluate.sanity import assert_unchanged, snapshot
from evaluate.splits import HeldoutSplit, heldout_split
from evaluate.transforms import ProbeTrainView
from pretrain import log_sinks
from pretrain.data import SubsetDataset
from pretrain.sampling import SeededBatches
from pretrain.step_log import open_trainer_log
from results.record import Task
from slurm import submit as slurm_submit

PAPER_PROTOCOL = "byol-paper/2"  # byol-paper/1 (grid {0.4 ... 0.05}) stays readable in records
FAST_PROTOCOL = "cached-centercrop/2"  # /1: the same with byol-paper/1's grid
Cache = tuple[torch.Tensor, torch.Tensor] | None  # (features [N, D], labels [N]) of train, fast


@dataclass(frozen=True)
class LinearConfig:
    """Linear evaluation, protocol `byol-paper/2` (BYOL v3, App. C.1; Grill et al. 2020).

    The encoder is frozen: eval mode, so neither its weights nor its BN statistics change (checked
    bit for bit after the run, evaluate/sanity.py). A linear layer on the pooled representation is
    trained on random resized crops + flips and tested on the centre crop (resize 256, crop 224,
    bicubic; small images: see evaluate/transforms.py). SGD with Nesterov momentum 0.9, 80 epochs,
    batch 1024, no weight decay. The learning rate is chosen among
    {1.6, 1.2, 0.8, 0.4, 0.3, 0.2, 0.1, 0.05} at batch 1024 (other batch sizes scale them linearly,
    and the record holds both): the grid covers both readings of the paper, App. C.1's
    {0.4, 0.3, 0.2, 0.1, 0.05} as absolute LRs and the authors' eval code's base LR x batch / 256
    (0.2 -> 0.8 at batch 1024). `byol-paper/1` was the same protocol with the App. C.1 grid only;
    its records stay readable and never share a table column with /2 (results/tables.py). Chosen
    on a held-out split of the training set (ImageNet: 10,009 images, evaluate/splits.py). Then the
    chosen LR is retrained on the full training set and reported on the validation set, top-1 and
    top-5 (the paper does not say whether it retrains; we do, and the record says so). All the
    candidate heads train at once on the same frozen features of each batch (evaluate/heads.py).

    `fast=True` is protocol `cached-centercrop/2`: features of the centre crop are extracted once
    and cached on disk, then the same sweep, selection and retraining run on them in seconds. It
    has no training augmentation, so it is a different protocol, recorded under its own name.

    `dino_vit=True` (ViTs with a [CLS] token only) trains the same probe on DINO eval_linear.py's
    ViT feature, the final-normed [CLS] tokens of the last 4 blocks concatenated, recorded as
    `byol-paper-dino-vit-last4/1` (`cached-centercrop-dino-vit-last4/1` with fast); see
    evaluate/dino_linear.py.
    """

    ckpt: str  # export, training checkpoint, torchvision state dict, or random:<arch>[:cifar]
    dataset: str = "imagenet"
    data: str | None = None
    arch: str | None = None  # foreign weights only; default: metadata, else inferred
    label: str | None = None  # checkpoint label in the record; default: the file's metadata
    fast: bool = False  # True: protocol cached-centercrop/2
    dino_vit: bool = False  # True: DINO's ViT feature (evaluate/dino_linear.py), own protocols
    epochs: int = 80  # BYOL v3, App. C.1
    batch_size: int = 1024  # BYOL v3, App. C.1
    # at batch 1024: BYOL v3, App. C.1's grid plus the authors' code's reading (0.2 x 1024/256 and
    # around it); byol-paper/2
    lrs: tuple[float, ...] = (1.6, 1.2, 0.8, 0.4, 0.3, 0.2, 0.1, 0.05)
    lr_batch_size: int = 1024  # the batch the lrs are stated for: lr x batch_size / 1024
    momentum: float = 0.9  # BYOL v3, App. C.1, Nesterov
    weight_decay: float = 0.0  # BYOL v3, App. C.1: none
    seed: int = 0  # held-out split, sample order, views, head init, random:<arch> weights
    image_size: int | None = None  # default: the checkpoint's, else by data set (transforms.py)
    device: str | None = None  # default: cuda when available
    num_workers: int = field(default_factory=harness.default_num_workers)  # CPUs, at most 8
    records: str | None = None  # default: records/ beside the run dir of ckpt, else ./records
    cache_dir: str | None = None  # default: $BYOL_BENCH_CACHE, else ~/.cache/byol-bench/features
    log_to: str = ""  # the heads' training steps also to tensorboard, wandb (<work dir>/log.jsonl)


def protocol_of(config: LinearConfig) -> str:
    """The recorded protocol name of `config`: paper or fast, on the pooled or DINO's feature."""
    if config.dino_vit:
        return DINO_VIT_FAST_PROTOCOL if config.fast else DINO_VIT_PROTOCOL
    return FAST_PROTOCOL if config.fast else PAPER_PROTOCOL


def scaled_lrs(config: LinearConfig) -> list[float]:
    """The candidate LRs at `batch_size`: linear scaling from batch 1024 (BYOL v3, App. C.1)."""
    return [lr * config.batch_size / config.lr_batch_size for lr in config.lrs]


def train_batches(
    config: LinearConfig, inputs: harness.EvalInputs, indices: list[int], cache: Cache
) -> tuple[Batches, int]:
    """(batches, steps per epoch) over the training images at `indices`: cached centre-crop
    features (fast) or augmented views through the frozen encoder (paper protocol)."""
    if config.fast:
        features, labels = cache
        index = torch.tensor(indices)
        return tensor_batches(
            features[index], labels[index], config.batch_size, config.seed, inputs.device
        )
    images = SubsetDataset(inputs.train_set, indices)
    sampler = SeededBatches(len(images), config.batch_size, config.seed, last="keep")
    loader = torch.utils.data.DataLoader(
        ProbeTrainView(images, inputs.preprocessing, config.seed),
        batch_sampler=sampler,
        num_workers=config.num_workers,
        pin_memory=inputs.device.type == "cuda",
        persistent_workers=config.num_workers > 0,
    )

    def batches(epoch: int):
        sampler.set_epoch(epoch)
        for views, labels in loader:
            with torch.no_grad():
                features = inputs.encoder(views.to(inputs.device, non_blocking=True))  # [B, D]
            yield features.float(), labels.to(inputs.device, non_blocking=True)

    return batches, len(sampler)


def fit(
    config: LinearConfig,
    inputs: harness.EvalInputs,
    batches_and_steps: tuple[Batches, int],
    lrs: list[float],
    desc: str,
) -> LinearHeads:
    """One head per LR in `lrs` (batch-scaled), trained with the config's protocol settings; with
    --log-to, its steps go to <work dir>/<desc>/log.jsonl and the sinks."""
    batches, steps_per_epoch = batches_and_steps
    log = None
    if config.log_to:
        protocol = protocol_of(config)
        variant = f"{config.dataset}-seed{config.seed}"
        work = harness.work_dir(
            "linear",
            protocol,
            inputs.metadata,
            ckpt=config.ckpt,
            records=config.records,
            variant=variant,
        )
        log = open_trainer_log(work / desc.replace(" ", "-"), config.log_to, {"lrs": lrs})
    heads = fit_heads(
        batches,
        lrs=lrs,
        feature_dim=inputs.metadata["feature_dim"],
        num_classes=inputs.train_set.num_classes,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        seed=config.seed,
        device=inputs.device,
        desc=desc,
        log=log,
    )
    if log is not None:
        log.close()
    return heads


def heldout_features(
    config: LinearConfig, inputs: harness.EvalInputs, split: HeldoutSplit, cache: Cache
) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre-crop features of the held-out images (a slice of the cache when fast)."""
    if config.fast:
        index = torch.tensor(split.heldout)
        return cache[0][index], cache[1][index]
    images = SubsetDataset(inputs.train_set, split.heldout)
    name = f"train@{split.name}-{split.sha256[:12]}"
    return harness.features(inputs, images, name, config.batch_size, config.num_workers)


def run_probe(config: LinearConfig, inputs: harness.EvalInputs) -> tuple[dict, dict, tuple]:
    """Sweep on train minus held-out, choose on held-out, retrain on all of train, test; the
    third item is the test set's bootstrap intervals and their per-example data."""
    split = heldout_split(inputs.train_set, seed=config.seed, out_dir=inputs.records_dir / "splits")
    cache = None
    if config.fast:
        cache = harness.features(
            inputs, inputs.train_set, "train", config.batch_size, config.num_workers
        )
    lrs = scaled_lrs(config)
    heads = fit(config, inputs, train_batches(config, inputs, split.train, cache), lrs, "sweep")
    candidates = evaluate_heads(heads, *heldout_features(config, inputs, split, cache))
    finite = [i for i, result in enumerate(candidates) if result["top1"] is not None]
    if not finite:
        raise RuntimeError(f"every candidate LR {lrs} diverged (non-finite weights)")
    best = max(finite, key=lambda i: (candidates[i]["top1"], -i))  # ties: the first listed
    everything = list(range(len(inputs.train_set)))
    batches = train_batches(config, inputs, everything, cache)
    head = fit(config, inputs, batches, [lrs[best]], f"retrain lr {lrs[best]:g}")
    if not head.finite()[0]:
        raise RuntimeError(f"the retrained head diverged at lr {lrs[best]:g}")
    test_features = harness.features(
        inputs, inputs.eval_set, inputs.eval_split, config.batch_size, config.num_workers
    )
    test = evaluate_heads(head, *test_features)[0]
    hits = topk_hits(head_scores(head, test_features[0]), test_features[1])
    selection = {
        "lr": config.lrs[best],
        "lr_scaled": lrs[best],
        "batch_size": config.batch_size,
        "epochs": config.epochs,
        "candidates": [
            {"lr": lr, "lr_scaled": scaled, "heldout_top1": r["top1"], "heldout_top5": r["top5"]}
            for lr, scaled, r in zip(config.lrs, lrs, candidates)
        ],
        "chosen_on": split.name,
        "heldout_split_sha256": split.sha256,
        "heldout_split_file": str(split.path.resolve()),
        "retrained_on": "train (all images, held-out included)",
    }
    intervals = uncertainty({"top1": hits[1], "top5": hits[5]})
    return {"top1": test["top1"], "top5": test["top5"]}, selection, intervals


def parse_config(argv: list[str] | None) -> LinearConfig:
    """LinearConfig from the command line (flags override the paper's defaults)."""
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="python -m evaluate.linear",
        description=LinearConfig.__doc__.split("\n")[0],
        epilog="Protocol: see the LinearConfig docstring in evaluate/linear.py.",
    )
    harness.add_common_arguments(parser, series=True)  # several checkpoints: --fast only
    parser.add_argument(
        "--fast",
        action="store_true",
        default=None,
        help=f"protocol {FAST_PROTOCOL}: the sweep on cached centre-crop features (seconds), "
        f"recorded apart from {PAPER_PROTOCOL}",
    )
    parser.add_argument(
        "--dino-vit",
        action="store_true",
        default=None,
        help=f"ViTs: the probe reads DINO eval_linear.py's feature (final-normed [CLS] of the "
        f"last 4 blocks, concatenated), recorded as {DINO_VIT_PROTOCOL} ({DINO_VIT_FAST_PROTOCOL} "
        "with --fast); ResNets are refused",
    )
    parser.add_argument("--epochs", type=int, help="shorten the probe (default: 80, the paper's)")
    parser.add_argument("--lrs", type=float, nargs="+", help="candidate LRs at batch 1024")
    log_sinks.add_log_argument(parser)
    args = parser.parse_args(argv)
    if args.lrs is not None:
        args.lrs = tuple(args.lrs)
    return harness.config_from_args(LinearConfig, args)


def main(argv: list[str] | None = None) -> None:
    """The probe for each checkpoint of --ckpt (evaluate/series.py; several need --fast): here in
    sequence, or with --slurm as one one-task job (several checkpoints: a job array)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    with harness.error_boundary():
        argvs = series.per_checkpoint_argvs(argv)
        if len(argvs) > 1 and not parse_config(argvs[0]).fast:
            raise harness.InputError(
                f"--ckpt names {len(argvs)} checkpoints, but the paper's linear protocol "
                f"({PAPER_PROTOCOL}: {LinearConfig.epochs} epochs on augmented images each) is too "
                "expensive for a series: evaluate one checkpoint at a time, or pass --fast "
                f"({FAST_PROTOCOL}) for the series"
            )
        if slurm_submit.submit_cli_if_requested(  # --slurm: run as a job (array)
            "evaluate.linear", argv, tasks=series.per_checkpoint_argvs
        ):
            return
    series.run_series(argvs, evaluate_one)


def evaluate_one(argv: list[str]) -> None:
    """The linear probe of one checkpoint and its record."""
    with harness.error_boundary():
        config = parse_config(argv)
        protocol = protocol_of(config)
        if config.epochs < 1 or not config.lrs:
            raise harness.InputError("--epochs must be at least 1 and --lrs needs a value")
        log_sinks.check_log_to(config.log_to)
        inputs = harness.load_inputs(config)
        if config.dino_vit:
            use_dino_vit_features(inputs)
        frozen = snapshot(inputs.encoder)

        def run() -> tuple[dict, dict, tuple]:
            outcome = run_probe(config, inputs)
            assert_unchanged(inputs.encoder, frozen)  # the probe left the encoder untouched
            return outcome

        task = Task("linear", config.dataset, inputs.eval_split, protocol)
        record, path = harness.record_run(inputs, config, task, run)
    selection = record.selection
    print(
        f"linear {protocol} {record.task.dataset}/{record.task.split} "
        f"[{record.checkpoint.label}, {record.checkpoint.weights_sha256[:8]}]: "
        f"top1 {record.metrics['top1']:.2f} top5 {record.metrics['top5']:.2f} "
        f"(lr {selection['lr']:g} at batch 1024, chosen on {selection['chosen_on']}) -> {path}"
    )


if __name__ == "__main__":
    main()
