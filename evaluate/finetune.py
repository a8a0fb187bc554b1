"""Full fine-tuning of encoder + linear head: one cell (LR, epochs) of the semi-supervised grid,
or one cell (LR, weight decay, steps) of the transfer fine-tuning grid
(transfer/classification/finetune.py).

BYOL v3, App. C.1 (semi-supervised): the whole network is fine-tuned with a linear classifier on
the pooled representation; SGD with Nesterov momentum 0.9, batch 1024, no weight decay, no
clipping; training views are random resized crops + flips and the test view is the centre crop
(the linear protocol's, evaluate/transforms.py). BN runs in train mode (batch statistics, running
statistics updated): the paper does not say, train mode is the norm. Neither the schedule nor the
head's initialisation is stated: cosine decay to 0 without warm-up and haiku's Linear init, as
the linear probe (evaluate/heads.py, the authors' code). The LR is scaled linearly with the batch.

The transfer grid's cells (BYOL v3, App. D.3) add to this: a length in steps instead of epochs,
a weight-decay value that the optimiser applies divided by the cell's peak LR (`wd / lr`, as
ssl-transfer's finetune.py passes `weight_decay=wd / lr` to SGD), the BN running-statistics
momentum of the setup (`bn_momentum`), a multi-label loss (one-vs-rest sigmoid cross-entropy)
when the labels are rows of a label matrix, and the setup's own held-out score
(`heldout_score`). A cell of weight decay 0 and a length in epochs is named and keyed exactly as
before, so the semi-supervised grid's cell dirs still resume.

A cell is resumable like pretraining (pretrain/rundir.py): `<cell dir>/config.json` holds the
cell's settings (a cell dir of other settings is refused, naming them) and `checkpoints/last.pt`
(atomic, digest-checked) the model, optimiser and step, written at every epoch end and every
`ckpt_every_min` minutes. The sample order is pretrain/sampling.py's (`SeededBatches`, the last
batch kept if it gives every rank two images) and each view is drawn from
`sample_seed(seed, epoch, index)`, so a killed and resumed cell ends with the same weights as an
uninterrupted one. A cell stated in steps is checkpointed every `ckpt_every_min` minutes and at
its end only (a 20,000-step cell on DTD would otherwise save every 8 steps). A non-finite loss
stops the cell (NonFiniteLossError, its step recorded as `diverged_at_step`) without saving. A
finished cell writes `result.json` (held-out scores) and keeps its final weights in last.pt
(previous.pt is deleted); a rerun reads them instead of training again.

Distributed (torch.distributed environment, pretrain/dist.py; SLURM exports it): every rank takes
its slice of each global batch, gradients are averaged by DistributedDataParallel, BN statistics
are global on CUDA (SyncBatchNorm), accuracy counts are summed over ranks. `precision="bf16"`
runs the forward passes under bfloat16 autocast, as pretraining does.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from evaluate.heads import LinearHeads
from evaluate.metrics import percent, topk_hits
from evaluate.transforms import Preprocessing, ProbeTrainView
from pretrain import dist, rundir
from pretrain.backbones import build_backbone
from pretrain.checkpoint import last_checkpoint_path, load_checkpoint
from pretrain.data import ImageDataset, SubsetDataset
from pretrain.sampling import SeededBatches
from pretrain.schedule import warmup_cosine
from pretrain.step_log import open_trainer_log
from results.atomic import write_atomic

RESULT_FILE = "result.json"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cell:
    """One point of a grid: the LR (stated at the grid's batch), and the length in epochs (the
    semi-supervised grid) or in steps (the transfer grid); `weight_decay` is the grid's value,
    applied as weight_decay / LR (BYOL v3, App. D.3; 0: none)."""

    lr: float
    epochs: int | None = None
    weight_decay: float = 0.0
    steps: int | None = None

    def __post_init__(self) -> None:
        if (self.epochs is None) == (self.steps is None):
            raise ValueError(f"a cell is {self.epochs} epochs or {self.steps} steps, not both")

    @property
    def name(self) -> str:
        """`lr0.05-ep30` (as before), `lr0.001-wd1e-05-steps20000`: weight decay only when set."""
        length = f"ep{self.epochs}" if self.steps is None else f"steps{self.steps}"
        decay = f"-wd{self.weight_decay:g}" if self.weight_decay else ""
        return f"lr{self.lr:g}{decay}-{length}"

    def total_steps(self, steps_per_epoch: int) -> int:
        return self.steps if self.steps is not None else self.epochs * steps_per_epoch


@dataclass(frozen=True)
class FinetuneSetup:
    """What every cell of one grid shares: the starting weights, the data and the settings."""

    arch: str
    cifar_stem: bool
    init_state: dict  # the encoder's starting weights (torchvision key names)
    num_classes: int
    train_images: ImageDataset  # the labelled subset
    heldout_images: ImageDataset  # where the cells are compared
    preprocessing: Preprocessing
    batch_size: int  # global
    lr_scale: float  # batch_size / the batch the LRs are stated for (1024)
    momentum: float
    weight_decay: float
    seed: int
    precision: str  # fp32 | bf16
    num_workers: int
    ckpt_every_min: float
    device: torch.device
    info: dist.DistInfo
    key: dict = field(default_factory=dict)  # plain values naming these settings (resume check)
    padding: str = "torchvision"  # the weights' padding mode (metadata["padding"]; tf-same: Haiku)
    stem_padding: int | None = None  # metadata["stem_padding"] (solo-learn's CIFAR stem: 2)
    vit_options: dict = field(default_factory=dict)  # a ViT's [CLS]/norm (backbones.vit_options)
    bn_momentum: float | None = None  # PyTorch convention; None: the modules' default (0.1)
    # the held-out score of a trained cell (model, setup) -> {key: value}, and its keys (None
    # when the cell diverged); default: top-1 and top-5 of evaluate_classifier
    heldout_score: Callable[[nn.Module, FinetuneSetup], dict] | None = None
    heldout_keys: tuple[str, ...] = ("heldout_top1", "heldout_top5")
    log_to: str = ""  # --log-to: each cell's log.jsonl step lines also to tensorboard, wandb


class Classifier(nn.Module):
    """The fine-tuned network: images [B, 3, S, S] -> encoder -> [B, D] -> head -> logits [B, C]."""

    def __init__(self, encoder: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(images))


def build_classifier(setup: FinetuneSetup) -> Classifier:
    """The encoder at its starting weights (strict) and a fresh head seeded like the probe's."""
    encoder, feature_dim = build_backbone(
        setup.arch,
        cifar_stem=setup.cifar_stem,
        padding=setup.padding,
        stem_padding=setup.stem_padding,
        **setup.vit_options,
    )
    encoder.load_state_dict(setup.init_state, strict=True)
    head = LinearHeads(1, feature_dim, setup.num_classes, setup.seed).heads[0]
    model = Classifier(encoder, head)
    if setup.info.world_size > 1 and setup.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # global BN, as in pretraining
    return model.to(setup.device)


def trainable_classifier(setup: FinetuneSetup) -> Classifier:
    """build_classifier with the setup's BN running-statistics momentum (when it states one)."""
    model = build_classifier(setup)
    if setup.bn_momentum is not None:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):  # also SyncBatchNorm
                module.momentum = setup.bn_momentum
    return model


def cell_batches(setup: FinetuneSetup) -> SeededBatches:
    """This rank's part of every global batch of an epoch, as (epoch, index) keys: the last,
    smaller batch is kept (a 1% subset may hold fewer images than one batch) unless it has fewer
    than 2 images per rank (BN in train mode needs two)."""
    info = setup.info
    return SeededBatches(
        len(setup.train_images),
        setup.batch_size,
        setup.seed,
        rank=info.rank,
        world_size=info.world_size,
        last="keep",
        min_last=2 * info.world_size,
    )


def autocast(setup: FinetuneSetup):
    return torch.autocast(
        setup.device.type, dtype=torch.bfloat16, enabled=setup.precision == "bf16"
    )


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    lr: float,
    setup: FinetuneSetup,
) -> float:
    """One SGD step on the classification loss at learning rate `lr`; returns the loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    with autocast(setup):
        logits = model(images)  # [B, C]
    loss = classification_loss(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy for labels [B] (class indices); for labels [B, C] (multi-label
    targets in {0, 1}) one sigmoid cross-entropy per class, averaged over the B x C entries
    (one-vs-rest, as ssl-transfer's BCEWithLogitsLoss for VOC2007)."""
    if labels.dim() == 2:
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    return F.cross_entropy(logits, labels)


def build_optimizer(model: nn.Module, cell: Cell, setup: FinetuneSetup) -> torch.optim.SGD:
    """SGD with Nesterov momentum; weight decay = the setup's + the cell's value / its peak LR
    (BYOL v3, App. D.3: "the weight decay is divided by the learning rate"; ssl-transfer's
    finetune.py: `SGD(..., weight_decay=wd / lr)`), so each step shrinks weights by about
    wd x lr(t) / peak LR."""
    peak_lr = cell.lr * setup.lr_scale
    return torch.optim.SGD(
        model.parameters(),
        lr=0.0,
        momentum=setup.momentum,
        nesterov=True,
        weight_decay=setup.weight_decay + cell.weight_decay / peak_lr,
    )


def run_cell(cell: Cell, setup: FinetuneSetup, cell_dir: Path) -> dict:
    """Fine-tune one cell (resuming from `cell_dir`), then score it on the held-out images.

    Returns the cell's result: lr, epochs, steps (and weight_decay when set), the held-out
    scores `setup.heldout_keys` (default heldout_top1/top5; None if the loss became non-finite,
    `diverged_at_step` says when). A finished cell's result is read back.
    """
    rundir.claim(cell_dir, cell_key(cell, setup), what="fine-tune", info=setup.info)
    done = read_result(cell_dir)
    if done is not None:
        log.info("cell %s: finished earlier, %s", cell.name, heldout_summary(done, setup))
        return done
    started = time.monotonic()
    model = trainable_classifier(setup)
    optimizer = build_optimizer(model, cell, setup)
    step = restore(cell_dir, model, optimizer)
    sampler = cell_batches(setup)
    result = {"cell": cell.name, "lr": cell.lr, "epochs": cell.epochs}
    if cell.weight_decay:
        result["weight_decay"] = cell.weight_decay
    result["steps"] = cell.total_steps(sampler.steps_per_epoch)
    try:
        train_cell(cell, setup, cell_dir, model, optimizer, sampler, step)
        result.update(heldout_scores(model, cell, setup), diverged_at_step=None)
    except rundir.NonFiniteLossError as error:  # one diverged cell does not stop the grid
        log.warning("cell %s: %s", cell.name, error)
        result.update(dict.fromkeys(setup.heldout_keys), diverged_at_step=error.step)
    result["wall_seconds"] = round(time.monotonic() - started, 3)  # this session's part
    if setup.info.is_main:
        write_atomic(cell_dir / RESULT_FILE, json.dumps(result, indent=2).encode())
        # a finished cell is read back from result.json and last.pt; the fallback copy only
        # doubles the disk a grid takes (ten R50 cells: ~2 GB)
        last_checkpoint_path(cell_dir).with_name("previous.pt").unlink(missing_ok=True)
    dist.barrier()
    return result


def heldout_scores(model: nn.Module, cell: Cell, setup: FinetuneSetup) -> dict:
    """The trained cell's held-out scores: `setup.heldout_score`, else top-1 and top-5."""
    if setup.heldout_score is not None:
        return setup.heldout_score(model, setup)
    scores = evaluate_classifier(model, setup.heldout_images, setup, f"held-out {cell.name}")
    return {"heldout_top1": scores["top1"], "heldout_top5": scores["top5"]}


def heldout_summary(result: dict, setup: FinetuneSetup) -> str:
    return ", ".join(f"{key} {result.get(key)}" for key in setup.heldout_keys)


def train_cell(
    cell: Cell,
    setup: FinetuneSetup,
    cell_dir: Path,
    model: Classifier,
    optimizer: torch.optim.Optimizer,
    sampler: SeededBatches,
    step: int,
) -> None:
    """Train from `step` to the cell's end, saving as it goes; NonFiniteLossError on divergence."""
    steps_per_epoch = sampler.steps_per_epoch
    total_steps = cell.total_steps(steps_per_epoch)
    saves_per_epoch = cell.steps is None  # a step-length cell saves on time and at its end
    trained = _distributed(model, setup)
    loader = DataLoader(
        ProbeTrainView(setup.train_images, setup.preprocessing, setup.seed),
        batch_sampler=sampler,
        num_workers=setup.num_workers,
        pin_memory=setup.device.type == "cuda",
    )
    bar = tqdm(
        total=total_steps,
        initial=step,
        desc=f"fine-tune {cell.name}",
        unit="step",
        disable=not setup.info.is_main,
        dynamic_ncols=True,
    )
    peak_lr, seen, started = cell.lr * setup.lr_scale, 0, time.monotonic()
    last_save, first_step = started, step
    step_log = open_trainer_log(
        cell_dir, setup.log_to if setup.info.is_main else "", cell_key(cell, setup)
    )
    model.train()
    while step < total_steps:
        sampler.set_epoch(*divmod(step, steps_per_epoch))
        for images, labels in loader:
            lr = warmup_cosine(step, total_steps, peak_lr)
            images = images.to(setup.device, non_blocking=True)
            labels = labels.to(setup.device, non_blocking=True)
            loss = train_step(trained, optimizer, images, labels, lr, setup)
            rundir.check_finite(loss, step=step, lr=lr, run_dir=cell_dir, what="fine-tune loss")
            step, seen = step + 1, seen + len(labels) * setup.info.world_size
            bar.update(1)
            rate = seen / max(time.monotonic() - started, 1e-9)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.3g}", img_s=f"{rate:.0f}", refresh=False)
            if setup.info.is_main:
                step_log.step(step, last=step == total_steps, loss=loss, lr=lr, img_s=rate)
            if step == total_steps:
                break  # a step-length cell may end inside an epoch
            due = rundir.checkpoint_due(last_save, setup.ckpt_every_min)
            if (saves_per_epoch and step % steps_per_epoch == 0) or due:
                save(cell_dir, model, optimizer, step, steps_per_epoch, setup.info)
                last_save = time.monotonic()
    if step != first_step:  # the final weights (a cell resumed at its end has them already)
        save(cell_dir, model, optimizer, step, steps_per_epoch, setup.info)
    bar.close()
    step_log.close()


def _distributed(model: Classifier, setup: FinetuneSetup) -> nn.Module:
    """The model wrapped in DDP when several ranks fine-tune it together, else the model."""
    if setup.info.world_size == 1:
        return model
    device_ids = [setup.device.index] if setup.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def save(cell_dir, model, optimizer, step, steps_per_epoch, info) -> None:
    """The cell's state at `step` (rank 0 writes; every rank waits for it)."""
    state = {
        "step": step,
        "epoch": step // steps_per_epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
    }
    rundir.save(cell_dir, state, info)
    dist.barrier()


def restore(cell_dir: Path, model: nn.Module, optimizer) -> int:
    """Load the cell's newest good checkpoint; its step (0 when there is none)."""
    state = rundir.resume(cell_dir)
    if state is None:
        return 0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    log.info("cell %s: resumed at step %d", cell_dir.name, state["step"])
    return int(state["step"])


def cell_key(cell: Cell, setup: FinetuneSetup) -> dict:
    """The settings a cell's checkpoints and result belong to (its run dir identity); weight
    decay and steps only when set, so the semi-supervised cells keep their identity."""
    key = {**setup.key, "lr": cell.lr, "epochs": cell.epochs}
    if cell.weight_decay:
        key["weight_decay_value"] = cell.weight_decay  # setup.key may hold "weight_decay"
    if cell.steps is not None:
        key["steps"] = cell.steps
    return key


def read_result(cell_dir: Path) -> dict | None:
    """The finished cell's result.json (of a claimed cell dir), or None."""
    path = cell_dir / RESULT_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def trained_classifier(cell: Cell, setup: FinetuneSetup, cell_dir: Path) -> Classifier:
    """The final weights of a finished cell (its last checkpoint)."""
    state = load_checkpoint(last_checkpoint_path(cell_dir))  # run_cell claimed the cell dir
    model = build_classifier(setup)
    model.load_state_dict(state["model"])
    return model


@torch.no_grad()
def evaluate_classifier(
    model: nn.Module, images: ImageDataset, setup: FinetuneSetup, desc: str
) -> dict[str, float]:
    """Top-1 and top-5 (%) on the centre-crop view of `images`; each rank scores its share."""
    hits = classifier_hits(model, images, setup, desc)
    return {f"top{k}": percent(hit.sum().item(), len(hit)) for k, hit in hits.items()}


def classifier_hits(
    model: nn.Module, images: ImageDataset, setup: FinetuneSetup, desc: str
) -> dict[int, torch.Tensor]:
    """{1: [N], 5: [N]} (bool, CPU): is each image's label the model's first / among its top 5,
    on the centre-crop view (classifier_scores)."""
    scores = classifier_scores(model, images, setup, desc)
    return topk_hits(scores, torch.tensor(images.targets, dtype=torch.long))


@torch.no_grad()
def classifier_scores(
    model: nn.Module, images: ImageDataset, setup: FinetuneSetup, desc: str
) -> torch.Tensor:
    """Logits [N, C] (float64, CPU) of the centre-crop view of `images`; each rank scores its
    share (rank, rank + world size, ...) and the rows are summed over ranks (each row is
    written by one rank only, so the sum is exact)."""
    model.eval()
    info = setup.info
    rows = list(range(info.rank, len(images), info.world_size))
    loader = DataLoader(
        setup.preprocessing.eval_dataset(SubsetDataset(images, rows)),
        batch_size=max(setup.batch_size // info.world_size, 1),
        num_workers=setup.num_workers,
        pin_memory=setup.device.type == "cuda",
    )
    scores = torch.zeros(len(images), setup.num_classes, device=setup.device)
    done = 0
    with tqdm(total=len(rows), desc=desc, unit="img", disable=not info.is_main) as bar:
        for views, _ in loader:
            with autocast(setup):
                logits = model(views.to(setup.device, non_blocking=True))  # [B, C]
            scores[rows[done : done + len(views)]] = logits.float()
            done += len(views)
            bar.update(len(views))
    dist.all_reduce_sum(scores)
    model.train()
    return scores.double().cpu()
