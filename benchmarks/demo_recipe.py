"""Score a candidate demo recipe on the held-out split of Fashion-MNIST's training set (not a test).

    python -m benchmarks.demo_recipe --ckpt RUN/exports/backbone-<sha8>.pt
    python -m benchmarks.demo_recipe --ckpt random:resnet18 --image-size 16

How the demo preset (`pretrain/presets.py:byol_r18_fmnist_demo`) was chosen: each candidate run's
export, and the random initialisation of the same network at the same image size, are scored
here, never on the test set (issue 20). The held-out split is the linear probe's own
(evaluate/splits.py: a seeded, class-balanced 10% of the 60,000 training images, seed 0):

- linear: the `cached-centercrop/2` sweep (every LR of the grid) trained on the other 90%; the best
  candidate's held-out top-1, i.e. the number the probe selects on;
- kNN: the `knn-cosine-t0.07/1` rule (k = 200) with the other 90% as the bank, held-out queries.

The last line printed is one JSON object: {"ckpt", "image_size", "heldout_linear_top1",
"heldout_knn_top1", "per_lr", "seconds"}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from evaluate import harness
from evaluate import linear as linear_lib
from evaluate.heads import evaluate_heads
from evaluate.knn import knn_accuracy
from evaluate.splits import heldout_split


def heldout_scores(
    ckpt: str, image_size: int | None, work_dir: Path, data: str | None = None
) -> dict:
    """Held-out linear and kNN top-1 (%) of `ckpt` on Fashion-MNIST (see the module docstring)."""
    started = time.monotonic()
    config = linear_lib.LinearConfig(
        ckpt=ckpt,
        dataset="fmnist",
        data=data,
        fast=True,
        image_size=image_size,
        records=str(work_dir),
        num_workers=0,
    )
    inputs = harness.load_inputs(config)
    split = heldout_split(inputs.train_set, seed=config.seed, out_dir=work_dir / "splits")
    cache = harness.features(inputs, inputs.train_set, "train", config.batch_size, 0)
    lrs = linear_lib.scaled_lrs(config)
    batches = linear_lib.train_batches(config, inputs, split.train, cache)
    heads = linear_lib.fit(config, inputs, batches, lrs, "sweep")
    candidates = evaluate_heads(heads, *linear_lib.heldout_features(config, inputs, split, cache))
    bank, queries = torch.tensor(split.train), torch.tensor(split.heldout)
    features, labels = cache
    knn = knn_accuracy(
        features[bank],
        labels[bank],
        features[queries],
        labels[queries],
        num_classes=inputs.train_set.num_classes,
        ks=(200,),
    )
    finite = [c["top1"] for c in candidates if c["top1"] is not None]
    return {
        "ckpt": ckpt,
        "image_size": inputs.preprocessing.image_size,
        "heldout": split.name,
        "heldout_linear_top1": max(finite) if finite else None,
        "heldout_knn_top1": knn[200]["top1"],
        "per_lr": {f"{lr:g}": c["top1"] for lr, c in zip(config.lrs, candidates)},
        "seconds": round(time.monotonic() - started, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.demo_recipe",
        description="Held-out linear and kNN top-1 of a checkpoint on Fashion-MNIST (recipe "
        "selection for the demo; never the test set).",
        allow_abbrev=False,
    )
    parser.add_argument("--ckpt", required=True, help="an export, or random:resnet18")
    parser.add_argument("--image-size", type=int, default=None, help="default: the checkpoint's")
    parser.add_argument("--data", default=None, help="Fashion-MNIST root (default: Debian's)")
    parser.add_argument(
        "--work-dir", default="runs/demo-recipe", help="held-out split file (default %(default)s)"
    )
    args = parser.parse_args(argv)
    work_dir = Path(args.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    with harness.error_boundary():
        print(json.dumps(heldout_scores(args.ckpt, args.image_size, work_dir, args.data)))


if __name__ == "__main__":
    main()
