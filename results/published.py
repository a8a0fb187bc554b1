"""The published numbers as result records of kind "published": the BYOL paper's, each citing its
table, and SelfPatch's ViT-S/16 dense numbers (results/published_selfpatch.py, a second source).

Source: Grill et al., "Bootstrap Your Own Latent", arXiv 2006.07733 v3 (NeurIPS 2020), as listed in
docs/protocols.md, "Published numbers". ResNet-50 (1x) unless the arch says otherwise; every
ImageNet number is pretrained for 1000 epochs. Because they are ordinary records, "ours vs paper" is
an ordinary pivot (results/tables.py), and a published number shares a column only with ours
measured under the same `task.protocol`.

A number the sources do not agree on is kept but marked: `config["unconfirmed"]` maps a metric
to the reason, and tables print it with a dagger and the reason as a footnote.

Protocol names (what our evaluation CLIs write in `task.protocol` for the same measurement):
    linear        byol-paper/1, byol-paper/2  App. C.1 (evaluate/linear.py, PAPER_PROTOCOL): two
                  readings of the paper's LR grid; Table 1's numbers are the paper's protocol, so
                  they are the reference of each (LINEAR_PROTOCOLS; docs/protocols.md)
    semisup       byol-paper-1pct/1, byol-paper-10pct/1 (App. C.1, SimCLR's subsets),
                  byol-paper-100pct/1 (Table 8: fine-tuning on all labels)
    transfer-cls  byol-transfer-linear/1 (App. D.2), byol-transfer-finetune/1 (App. D.3)
                  (transfer/classification/); Table 3's BYOL, SimCLR-reproduction and
                  supervised rows
    detection     byol-paper-frcnn-c4/1   App. D.5; NOT MoCo's detectron2 VOC07+12 R50-C4 24k
    segmentation  byol-paper-fcn/1        App. D.4
    depth         byol-paper-depth/1      App. D.6 (transfer/depth/): Table 4's NYU v2 row, with
                                          the supervised (Laina et al.) and SimCLR rows of Table 12
SelfPatch's protocols (COCO Mask R-CNN, ADE20K semantic FPN / UperNet with ViT-S/16) are listed
in results/published_selfpatch.py.
"""

from __future__ import annotations

from collections.abc import Sequence

from results.published_selfpatch import selfpatch_records
from results.record import Record, Task, published_record, validate

PAPER = "Grill et al. 2020, BYOL v3 (arXiv 2006.07733)"
PAPER_DATE = "2020-09-10T00:00:00Z"  # arXiv v3
# Our two readings of App. C.1's linear protocol (they differ in the LR grid only); Table 1's
# numbers are the reference of both, each reading in its own column (results/tables.py).
LINEAR_PROTOCOLS = ("byol-paper/1", "byol-paper/2")
SEMISUP_PROTOCOLS = {1: "byol-paper-1pct/1", 10: "byol-paper-10pct/1", 100: "byol-paper-100pct/1"}
TRANSFER_PROTOCOLS = {"linear": "byol-transfer-linear/1", "finetune": "byol-transfer-finetune/1"}
DETECTION_PROTOCOL = "byol-paper-frcnn-c4/1"
SEGMENTATION_PROTOCOL = "byol-paper-fcn/1"
DEPTH_PROTOCOL = "byol-paper-depth/1"

# Table 3's data sets in the paper's order, with the metric App. D.2 reports for each.
TRANSFER_METRICS = {
    "food101": "top1",
    "cifar10": "top1",
    "cifar100": "top1",
    "birdsnap": "top1",
    "sun397": "top1",
    "cars": "top1",
    "aircraft": "mean_per_class",
    "voc2007": "map11",
    "dtd": "top1",
    "pets": "mean_per_class",
    "caltech101": "mean_per_class",
    "flowers": "mean_per_class",
}
_TRANSFER = {  # Table 3 (SimCLR's two rows cross-checked against SimCLR's Table B.5): method ->
    "byol": {
        "linear": (75.3, 91.3, 78.4, 57.2, 62.2, 67.8, 60.6, 82.5, 75.5, 90.4, 94.2, 96.1),
        "finetune": (88.5, 97.8, 86.1, 76.3, 63.7, 91.6, 88.1, 85.4, 76.2, 91.7, 93.8, 97.0),
    },
    "simclr": {  # "SimCLR (repro)": the authors' JAX reproduction
        "linear": (72.8, 90.5, 74.4, 42.4, 60.6, 49.3, 49.8, 81.4, 75.7, 84.6, 89.3, 92.6),
        "finetune": (87.5, 97.4, 85.3, 75.0, 63.9, 91.4, 87.6, 84.5, 75.4, 89.4, 91.7, 96.6),
    },
    "supervised": {  # "Supervised-IN [Chen et al.]": SimCLR's supervised ResNet-50 (76.3% top-1)
        "linear": (72.3, 93.6, 78.3, 53.7, 61.9, 66.7, 61.0, 82.8, 74.9, 91.5, 94.5, 94.7),
        "finetune": (88.3, 97.5, 86.4, 75.8, 64.3, 92.1, 86.0, 85.0, 74.6, 92.1, 93.3, 97.6),
    },
}
# Table 1 (linear) and Table 2 (semi-supervised 1% / 10%): arch -> (top-1, top-5)
_LINEAR = {
    "resnet50": (74.3, 91.6),
    "resnet50x2": (77.4, 93.6),
    "resnet50x4": (78.6, 94.2),
    "resnet200x2": (79.6, 94.8),
}
_UNCONFIRMED = {  # (table, arch) -> {metric: why}
    ("Table 1", "resnet200x2"): {"top5": "R200 2x top-5 is 94.8 in Table 1, 94.9 in Table 9"}
}
_SEMISUP = {
    1: {
        "resnet50": (53.2, 78.4),
        "resnet50x2": (62.2, 84.1),
        "resnet50x4": (69.1, 87.9),
        "resnet200x2": (71.2, 89.5),
    },
    10: {
        "resnet50": (68.8, 89.0),
        "resnet50x2": (73.5, 91.7),
        "resnet50x4": (75.7, 92.5),
        "resnet200x2": (77.7, 93.7),
    },
    100: {"resnet50": (77.7, 93.9)},  # Table 8
}
# Table 4, VOC07 test AP50 with the paper's Faster R-CNN protocol: BYOL and the two baselines
_DETECTION = {"byol": 77.5, "supervised": 74.4, "simclr": 75.2}
# Table 4 / Table 12, NYU v2 depth on the 654 test images: delta1-3 (%), rms (m), rel
_DEPTH = {
    "byol": (84.6, 96.7, 99.1, 0.541, 0.129),
    "supervised": (81.1, 95.3, 98.8, 0.573, 0.127),  # Laina et al. 2016's own result
    "simclr": (83.3, 96.5, 99.1, 0.557, 0.134),
}
_LABELS = {  # checkpoint.label: one table row per (method, arch)
    "byol": "Grill et al. 2020",
    "supervised": "Grill et al. 2020 (supervised IN-1k)",
    "simclr": "Grill et al. 2020 (SimCLR repro.)",
}


def _record(table: str, method: str, arch: str, task: Task, metrics: dict) -> Record:
    slug = f"{table}-{task.family}-{task.dataset}-{task.protocol}-{arch}-{method}"
    return published_record(
        "published-byol-v3-" + slug.lower().replace(" ", "").replace("/", "-"),
        source=PAPER,
        published_utc=PAPER_DATE,
        label=_LABELS[method],
        arch=arch,
        method=method,
        task=task,
        metrics=metrics,
        table=table,
        unconfirmed=_UNCONFIRMED.get((table, arch), {}),
        pretrain_epochs=1000 if method == "byol" else None,
    )


def published_records(linear_protocols: Sequence[str] = LINEAR_PROTOCOLS[:1]) -> list[Record]:
    """Every number of docs/protocols.md "Published numbers" as a record: the BYOL paper's, then
    SelfPatch's (results/published_selfpatch.py).

    Table 1's linear numbers come once per name in `linear_protocols` (default: byol-paper/1).
    """
    records = []
    for protocol in linear_protocols:
        for arch, (top1, top5) in _LINEAR.items():
            task = Task("linear", "imagenet", "val", protocol)
            records.append(_record("Table 1", "byol", arch, task, {"top1": top1, "top5": top5}))
    for fraction, by_arch in _SEMISUP.items():
        table = "Table 8" if fraction == 100 else "Table 2"
        for arch, (top1, top5) in by_arch.items():
            task = Task("semisup", "imagenet", "val", SEMISUP_PROTOCOLS[fraction])
            records.append(_record(table, "byol", arch, task, {"top1": top1, "top5": top5}))
    for method, modes in _TRANSFER.items():
        for mode, values in modes.items():
            for (dataset, metric), value in zip(TRANSFER_METRICS.items(), values, strict=True):
                task = Task("transfer-cls", dataset, "test", TRANSFER_PROTOCOLS[mode])
                records.append(_record("Table 3", method, "resnet50", task, {metric: value}))
    for method, ap50 in _DETECTION.items():
        task = Task("detection", "voc07", "test", DETECTION_PROTOCOL)
        records.append(_record("Table 4", method, "resnet50", task, {"ap50": ap50}))
    task = Task("segmentation", "voc2012", "val", SEGMENTATION_PROTOCOL)
    records.append(_record("Table 4", "byol", "resnet50", task, {"miou": 76.3}))
    for method, values in _DEPTH.items():
        task = Task("depth", "nyu-v2", "test", DEPTH_PROTOCOL)
        metrics = dict(zip(("delta1", "delta2", "delta3", "rms", "rel"), values, strict=True))
        records.append(_record("Table 4", method, "resnet50", task, metrics))
    records += selfpatch_records()
    for record in records:
        validate(record)
    return records
