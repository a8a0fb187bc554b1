"""A fixed set of records covering every table and every cell state (the golden tables' input)."""

from results.record import CheckpointRef, Provenance, Record, Task

R50 = "50" * 32  # weights_sha256 of "our" ResNet-50, 1000 epochs
R50X2 = "52" * 32
DEMO = "de" * 32  # the demo's ResNet-18 on Fashion-MNIST
RANDOM_R18 = "7d" * 32  # random:resnet18


def record(
    stamp: str,
    sha: str,
    task: Task,
    metrics: dict | None = None,
    *,
    label: str = "byol-r50-1000ep",
    arch: str = "resnet50",
    method: str = "byol",
    epochs: float | None = 1000,
    error: str | None = None,
    kind: str = "eval",
    source: str | None = None,
    path: str | None = None,
    config: dict | None = None,
    selection: dict | None = None,
) -> Record:
    """A record created at 2026-11-22T<stamp>Z; failed when `error` is given. `source` defaults
    to ours ("byol-bench", or "random-init" for that method), `path` to an export of run `label`."""
    created = f"2026-11-22T{stamp}Z"
    name = task.family if task else "import"
    return Record(
        record_id=f"20261122T{stamp.replace(':', '')}Z-{name}-{sha[:8]}",
        kind=kind,
        status="failed" if error else "complete",
        created_utc=created,
        checkpoint=CheckpointRef(
            weights_sha256=sha,
            label=label,
            arch=arch,
            method=method,
            pretrain_epochs=epochs,
            source=source or ("random-init" if method == "random-init" else "byol-bench"),
            path=path or f"/shared/runs/{label}/exports/backbone-{sha[:8]}.pt",
        ),
        task=task,
        metrics=metrics or {},
        config=config or {},
        selection=selection or {},
        provenance=Provenance(git_sha="a1b2c3d", command="python -m ...", wall_seconds=12.5),
        error=error,
    )


LINEAR_PAPER = Task("linear", "imagenet", "val", "byol-paper/1")
LINEAR_FAST_IN = Task("linear", "imagenet", "val", "cached-centercrop/1")
KNN_IN = Task("knn", "imagenet", "val", "knn-cosine-t0.07/1")
LINEAR_FMNIST = Task("linear", "fmnist", "test", "cached-centercrop/1")
KNN_FMNIST = Task("knn", "fmnist", "test", "knn-cosine-t0.07/1")
SEMISUP_1PCT = Task("semisup", "imagenet", "val", "byol-paper-1pct/1")
TRANSFER_FOOD = Task("transfer-cls", "food101", "test", "byol-transfer-linear/1")
TRANSFER_VOC = Task("transfer-cls", "voc2007", "test", "byol-transfer-linear/1")
DETECTION_MOCO = Task("detection", "voc07", "test", "moco-detectron2-c4-24k/1")
SEGMENTATION = Task("segmentation", "voc2012", "val", "byol-paper-fcn/1")
PRETRAIN = Task("pretrain", "imagenet", "train", "byol/1")


def linear_imagenet_records() -> list[Record]:
    """R50: a superseded, a counting and a later failed byol-paper/1 record, the cached-feature
    protocol and kNN; R50 2x: a failure only."""
    return [
        record("10:00:00", R50, LINEAR_PAPER, {"top1": 72.0, "top5": 90.0}),  # superseded
        record("11:00:00", R50, LINEAR_PAPER, {"top1": 74.1, "top5": 91.5}),  # counts
        record("12:00:00", R50, LINEAR_PAPER, error="RuntimeError: node lost"),  # after: ignored
        record("11:30:00", R50, LINEAR_FAST_IN, {"top1": 71.25, "top5": 90.125}),
        record("11:40:00", R50, KNN_IN, {"top1": 64.5, "top5": 85.0}),
        record(
            "13:00:00",
            R50X2,
            LINEAR_PAPER,
            error="RuntimeError: every candidate LR diverged",
            label="byol-r50x2",
            arch="resnet50x2",
        ),
    ]


def fixed_records() -> list[Record]:
    """linear_imagenet_records(), the demo's kind of table (trained vs random init), semi-
    supervised, transfer, detection under MoCo's protocol (never in the paper's column),
    segmentation, and a pretraining record (in no table)."""
    demo = dict(label="demo", arch="resnet18", epochs=4)
    baseline = dict(label="random-init resnet18", arch="resnet18", method="random-init", epochs=0)
    return [
        *linear_imagenet_records(),
        record("14:00:00", DEMO, LINEAR_FMNIST, {"top1": 84.61, "top5": 99.52}, **demo),
        record("14:01:00", DEMO, KNN_FMNIST, {"top1": 82.3, "top5": 98.9}, **demo),
        record("14:02:00", RANDOM_R18, LINEAR_FMNIST, {"top1": 78.05, "top5": 99.1}, **baseline),
        record("14:03:00", RANDOM_R18, KNN_FMNIST, error="ValueError: bad cache", **baseline),
        # three seeds of one protocol: a mean +- std (n=3) cell
        record("15:00:00", R50, SEMISUP_1PCT, {"top1": 53.0, "top5": 78.75}, config={"seed": 0}),
        record("15:01:00", R50, SEMISUP_1PCT, {"top1": 54.0, "top5": 79.0}, config={"seed": 1}),
        record("15:02:00", R50, SEMISUP_1PCT, {"top1": 55.0, "top5": 79.25}, config={"seed": 2}),
        record("15:10:00", R50, TRANSFER_FOOD, {"top1": 75.0}),
        record("15:20:00", R50, TRANSFER_VOC, error="OSError: VOC07 not found"),
        record("15:30:00", R50, DETECTION_MOCO, {"ap50": 82.0, "ap": 56.5}),
        # a protocol that averages its own 5 seeds (byol-paper-fcn/1)
        record(
            "15:40:00",
            R50,
            SEGMENTATION,
            {"miou": 76.0},
            selection={"seeds": [{"seed": k, "miou": 76.0} for k in range(5)], "miou_std": 0.25},
        ),
        record("09:00:00", R50, PRETRAIN, {"loss": 0.1}, kind="pretrain"),
    ]
