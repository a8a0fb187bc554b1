"""Transfer fine-tuning on one classification data set, protocol `byol-transfer-finetune/1`
(BYOL v3, App. D.3, which follows SimCLR App. B.8.1; docs/protocols.md).

Protocol: the whole network starts from the pretrained weights with a new linear head and is
trained with SGD, Nesterov momentum 0.9, 20,000 steps at batch 256 (the LRs are scaled linearly
for another batch); BN in train mode with running-statistics momentum max(1 - 10/s, 0.9) in
TensorFlow's convention, s the steps per epoch (`finetune_grids.bn_momentum`); training views
are random resized crops to 224 + horizontal flips only (evaluate/transforms.py's train view),
the test view is the shorter side resized to 256 (bicubic) + centre crop 224 (Preprocessing's
eval view). Grid (`finetune_grids.GRIDS`): LR among 7 log-spaced values in [1e-4, 0.1] x weight
decay among 7 log-spaced values in [1e-6, 1e-3] and 0, the weight decay divided by the LR
(evaluate/finetune.py:build_optimizer). Every cell trains on `train` and is scored on `val` with
the data set's metric (transfer/classification/metrics.py); the best cell (ties: the first in
grid order, `grid_cells`) is retrained on train + val, a run of its own, and scored on `test`;
the test images are touched only then.

Not stated in the paper: the LR schedule. Cosine decay to 0 without warm-up, per step, as
ssl-transfer's finetune.py (CosineAnnealingLR over the steps) and the Kornblith et al. summary.
VOC2007 (multi-label, `label_matrix_of` given): one sigmoid cross-entropy per class on the label
matrix (one-vs-rest, ssl-transfer's BCEWithLogitsLoss); difficult labels (0) are negatives in
training, as ssl-transfer (`target == 1`); the 11-point mAP ignores them, as the devkit.

Each cell and the final run are resumable cells of evaluate/finetune.py under `work_dir`
(`<cell name>/` and `final-<cell name>/`); `cell=K` runs one cell only (a SLURM array task,
`submit_finetune_grid`), and a later call without `cell` reads the finished cells back and only
retrains the winner.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from evaluate import harness
from evaluate.finetune import (
    Cell,
    FinetuneSetup,
    classifier_scores,
    run_cell,
    trained_classifier,
)
from evaluate.grid_jobs import submit_cells_then_final
from evaluate.splits import data_fingerprint
from pretrain import dist
from pretrain.backbones import vit_options
from pretrain.data import ConcatImages, ImageDataset
from pretrain.sampling import SeededBatches
from transfer.classification.finetune_grids import (
    GRIDS,
    LR_BATCH_SIZE,
    bn_momentum,
    grid_cells,
    protocol_name,
)
from transfer.classification.metrics import score, score_uncertainty

log = logging.getLogger(__name__)
LabelMatrixOf = Callable[[ImageDataset], torch.Tensor]  # images -> [N, C] in {1, -1, 0}


class MultiLabelImages(ImageDataset):
    """`images` whose label is a row of training targets [C] in {0, 1} (float): 1 where the label
    matrix says 1, else 0 (difficult counts as negative, as ssl-transfer)."""

    def __init__(self, images: ImageDataset, label_matrix: torch.Tensor) -> None:
        if label_matrix.shape[0] != len(images):
            raise ValueError(f"{label_matrix.shape[0]} label rows for {len(images)} images")
        self.base, self.label_targets = images, (label_matrix == 1).float()  # [N, C]
        super().__init__(images.name, images.classes, images.targets)

    def load(self, index: int):
        image, _ = self.base.load(index)
        return image, self.label_targets[index]


def score_images(
    model: nn.Module,
    setup: FinetuneSetup,
    *,
    images: ImageDataset,
    labels: torch.Tensor,
    metric: str,
    key: str,
) -> dict[str, float]:
    """{key: `metric` of the model on `images`}: a FinetuneSetup.heldout_score."""
    return {key: score(metric, classifier_scores(model, images, setup, key), labels)}


def labels_of(images: ImageDataset, label_matrix_of: LabelMatrixOf | None) -> torch.Tensor:
    """What the metric compares with: class indices [N], or the label matrix [N, C]."""
    if label_matrix_of is None:
        return torch.tensor(images.targets, dtype=torch.long)
    return label_matrix_of(images)


def make_setup(
    train: ImageDataset,
    scored: ImageDataset,
    scored_labels: torch.Tensor,
    score_key: str,
    *,
    inputs: harness.EvalInputs,
    metric: str,
    grid_name: str,
    seed: int,
    num_workers: int,
    precision: str,
    info: dist.DistInfo,
    ckpt_every_min: float,
    log_to: str = "",
    key: dict,
) -> FinetuneSetup:
    """The settings of every cell trained on `train` and scored (`score_key`: `metric`) on
    `scored`; `key`: what else names the run (its data), for the resume check."""
    grid = GRIDS[grid_name]
    momentum = bn_momentum_of(len(train), grid.batch_size, seed, info)
    device, metadata = inputs.device, inputs.metadata
    if device.type == "cuda" and info.world_size > 1:
        device = torch.device("cuda", info.local_rank)
    num_classes = scored_labels.shape[1] if scored_labels.dim() == 2 else train.num_classes
    scorer = functools.partial(
        score_images, images=scored, labels=scored_labels, metric=metric, key=score_key
    )
    return FinetuneSetup(
        arch=metadata["arch"],
        cifar_stem=bool(metadata.get("cifar_stem")),
        init_state={k: v.detach().cpu().clone() for k, v in inputs.encoder.state_dict().items()},
        num_classes=num_classes,
        train_images=train,
        heldout_images=scored,
        preprocessing=inputs.preprocessing,
        batch_size=grid.batch_size,
        lr_scale=grid.batch_size / LR_BATCH_SIZE,
        momentum=grid.momentum,
        weight_decay=0.0,  # the cells' own, divided by their LR
        seed=seed,
        precision=precision,
        num_workers=num_workers,
        ckpt_every_min=ckpt_every_min,
        log_to=log_to,
        device=device,
        info=info,
        key=setup_key(key, inputs, grid_name, metric, momentum, seed, precision),
        padding=metadata.get("padding") or "torchvision",
        stem_padding=metadata.get("stem_padding"),
        vit_options=vit_options(metadata),
        bn_momentum=momentum,
        heldout_score=scorer,
        heldout_keys=(score_key,),
    )


def setup_key(key: dict, inputs, grid_name: str, metric: str, momentum, seed, precision) -> dict:
    """What names a grid's runs for the resume check: `key` (the data), the weights, protocol,
    metric, the grid's settings, seed, precision and preprocessing."""
    return {
        **key,
        "weights_sha256": inputs.metadata["weights_sha256"],
        "protocol": protocol_name(grid_name),
        "metric": metric,
        **grid_key(GRIDS[grid_name], momentum),
        "seed": seed,
        "precision": precision,
        "preprocessing": dataclasses.asdict(inputs.preprocessing),
    }


def bn_momentum_of(images: int, batch_size: int, seed: int, info: dist.DistInfo) -> float:
    """BN momentum from the steps per epoch of the cells' sampler (evaluate/finetune.py:
    cell_batches) over `images` training images."""
    batches = SeededBatches(
        images,
        batch_size,
        seed,
        world_size=info.world_size,
        last="keep",
        min_last=2 * info.world_size,
    )
    return bn_momentum(batches.steps_per_epoch)


def grid_key(grid, momentum: float) -> dict:
    """The grid's optimiser settings as they name a cell's run (the resume check)."""
    return {
        "batch_size": grid.batch_size,
        "lr_batch_size": LR_BATCH_SIZE,
        "momentum": grid.momentum,
        "bn_momentum": momentum,
    }


def run_transfer_finetune(
    inputs: harness.EvalInputs,
    train: ImageDataset,
    val: ImageDataset,
    test: ImageDataset,
    metric: str,
    label_matrix_of: LabelMatrixOf | None,
    grid: str,
    work_dir: Path,
    *,
    seed: int = 0,
    num_workers: int = 0,
    precision: str = "fp32",
    cell: int | None = None,
    ckpt_every_min: float = 10.0,
    info: dist.DistInfo | None = None,
    log_to: str = "",
) -> tuple[dict, dict, tuple] | dict:
    """The protocol of the module docstring on one data set: every cell of `grid` (finished
    ones read back) trained on `train` and scored on `val` with `metric`, then the best one
    retrained on train + val and scored on `test`.

    Returns (metrics {"test_<metric>": value}, selection: every cell's val score, the chosen
    LR and weight decay, the final run's dir; (the test metric's bootstrap interval, its data)).
    With `cell=K` only that cell runs and its result is returned (a SLURM array task: no
    selection, no test score). `label_matrix_of` (VOC2007): images -> label matrix [N, C] in
    {1, -1, 0}; trained multi-label, `metric` map11. `inputs`: encoder, metadata, device...
    """
    check_metric(metric, label_matrix_of)
    info = info or dist.init_from_env(inputs.device.type)
    cells = grid_cells(GRIDS[grid])
    if cell is not None and not 0 <= cell < len(cells):
        raise harness.InputError(f"--cell {cell}: the grid has cells 0..{len(cells) - 1}")
    common = {
        "inputs": inputs,
        "metric": metric,
        "grid_name": grid,
        "seed": seed,
        "num_workers": num_workers,
        "precision": precision,
        "info": info,
        "ckpt_every_min": ckpt_every_min,
        "log_to": log_to,
    }
    fingerprints = {"train_sha256": data_fingerprint(train), "val_sha256": data_fingerprint(val)}
    train_labels, val_labels = labels_of(train, label_matrix_of), labels_of(val, label_matrix_of)
    grid_setup = make_setup(
        training_images(train, train_labels, label_matrix_of),
        val,
        val_labels,
        f"val_{metric}",
        key={"role": "grid", **fingerprints},
        **common,
    )
    if cell is not None:
        return run_cell(cells[cell], grid_setup, work_dir / cells[cell].name)
    results = [run_cell(one, grid_setup, work_dir / one.name) for one in cells]
    return retrain_and_test(
        cells, results, grid_setup, (train, val, test), label_matrix_of, work_dir, common
    )


def retrain_and_test(cells, results, grid_setup, data, label_matrix_of, work_dir, common):
    """(metrics, selection, intervals) of the grid's best cell on val, retrained on train + val
    and scored on test (run_transfer_finetune's second half)."""
    metric, (train, val, test) = common["metric"], data
    best = chosen_cell(results, f"val_{metric}", work_dir)
    final_setup, final_dir, final = retrain_on_train_and_val(
        cells[best], results[best], data, label_matrix_of, work_dir, common
    )
    selection = selection_of(cells, results, best, f"val_{metric}", grid_setup, final_setup)
    selection.update(
        run_dir=str(work_dir.resolve()),
        final_run_dir=str(final_dir.resolve()),
        images={
            "train": len(train),
            "val": len(val),
            "trainval": len(final_setup.train_images),
            "test": len(test),
        },
        world_size=common["info"].world_size,
    )
    model = trained_classifier(cells[best], final_setup, final_dir)
    intervals = final_test_uncertainty(model, test, final_setup, metric, label_matrix_of)
    return {f"test_{metric}": final[f"test_{metric}"]}, selection, intervals


def check_metric(metric: str, label_matrix_of: LabelMatrixOf | None) -> None:
    """map11 (VOC2007) goes with a label matrix, the other metrics with class indices."""
    if (metric == "map11") != (label_matrix_of is not None):
        raise harness.InputError(
            f"metric {metric} with{'' if label_matrix_of else 'out'} a label matrix: the 11-point "
            "mAP (VOC2007) needs one, top1 and mean_per_class take class indices"
        )


def final_test_uncertainty(model, test, setup, metric: str, label_matrix_of) -> tuple:
    """The final network's test scores once more: the bootstrap interval of its test metric."""
    scores = classifier_scores(model, test, setup, "test scores for the interval")
    return score_uncertainty(metric, scores, labels_of(test, label_matrix_of))


def retrain_on_train_and_val(
    chosen: Cell,
    chosen_result: dict,
    parts: tuple[ImageDataset, ImageDataset, ImageDataset],
    label_matrix_of: LabelMatrixOf | None,
    work_dir: Path,
    common: dict,
) -> tuple[FinetuneSetup, Path, dict]:
    """The final run: the chosen cell trained on train + val (`final-<cell>/`, resumable),
    scored on test; (its setup, its dir, its result). The test labels are read only here."""
    train, val, test = parts
    metric = common["metric"]
    trainval = ConcatImages([train, val])
    log.info(
        "chosen on val: %s (val_%s %s); retraining it on train + val (%d images)",
        chosen.name,
        metric,
        chosen_result[f"val_{metric}"],
        len(trainval),
    )
    labels = torch.cat([labels_of(train, label_matrix_of), labels_of(val, label_matrix_of)])
    fingerprints = {
        f"{name}_sha256": data_fingerprint(part)
        for name, part in zip(("train", "val", "test"), parts, strict=True)
    }
    setup = make_setup(
        training_images(trainval, labels, label_matrix_of),
        test,
        labels_of(test, label_matrix_of),
        f"test_{metric}",
        key={"role": "final", **fingerprints},
        **common,
    )
    final_dir = work_dir / f"final-{chosen.name}"
    final = run_cell(chosen, setup, final_dir)
    if final[f"test_{metric}"] is None:
        raise RuntimeError(
            f"the retrain of the chosen cell {chosen.name} on train + val diverged "
            f"(non-finite loss at step {final['diverged_at_step']}); see {final_dir}"
        )
    return setup, final_dir, final


def training_images(
    images: ImageDataset, labels: torch.Tensor, label_matrix_of: LabelMatrixOf | None
) -> ImageDataset:
    """The images as the training loop reads them: multi-label rows when there is a matrix."""
    return images if label_matrix_of is None else MultiLabelImages(images, labels)


def chosen_cell(results: list[dict], val_key: str, work_dir: Path) -> int:
    """The index of the best validation score; ties go to the first listed (grid_cells)."""
    finite = [i for i, result in enumerate(results) if result[val_key] is not None]
    if not finite:
        raise RuntimeError(f"every cell of the grid diverged (non-finite loss); see {work_dir}")
    return max(finite, key=lambda i: (results[i][val_key], -i))


def selection_of(
    cells: list[Cell],
    results: list[dict],
    best: int,
    val_key: str,
    grid_setup: FinetuneSetup,
    final_setup: FinetuneSetup,
) -> dict:
    """The record's selection block: every cell's validation score and the chosen cell."""
    candidates = [
        {
            "lr": one.lr,
            "weight_decay": one.weight_decay,
            "weight_decay_applied": one.weight_decay / (one.lr * grid_setup.lr_scale),
            val_key: result[val_key],
            "steps": result["steps"],
            "diverged_at_step": result["diverged_at_step"],
        }
        for one, result in zip(cells, results, strict=True)
    ]
    chosen = cells[best]
    return {
        "lr": chosen.lr,
        "lr_scaled": chosen.lr * grid_setup.lr_scale,
        "weight_decay": chosen.weight_decay,
        "weight_decay_applied": candidates[best]["weight_decay_applied"],
        "steps": chosen.steps,
        "batch_size": grid_setup.batch_size,
        "candidates": candidates,
        "chosen_on": "val",
        "ties": "the first in grid order: larger LR, then smaller weight decay",
        "retrained": True,  # on train + val, then scored on test
        "bn_momentum": {"grid": grid_setup.bn_momentum, "final": final_setup.bn_momentum},
    }


def submit_finetune_grid(slurm_args, command: Sequence[str], grid: str, name: str) -> object:
    """`--slurm`: one array task per cell of `grid` (`command --cell K`), then `command` again
    after them all (afterok): it reads the cells back, retrains the winner on train + val with
    the profile's full resources and writes the record. Returns the final job."""
    cells = len(grid_cells(GRIDS[grid]))
    return submit_cells_then_final(slurm_args, command, cells, name, final_trains=True)
