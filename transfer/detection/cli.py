"""Detection transfer: fine-tune a detector around the checkpoint's backbone, report AP.

    python -m transfer.detection --ckpt RUN/exports/backbone-3f2a9c1d.pt --data VOCdevkit
    python -m transfer.detection --ckpt ... --data VOCdevkit --protocol moco-detectron2-c4-24k/1
    python -m transfer.detection --ckpt ... --data coco --protocol coco-maskrcnn-fpn-1x/1
    python -m transfer.detection --ckpt ... --data coco --protocol selfpatch-coco-maskrcnn-vit-1x/1
    python -m transfer.detection --ckpt ... --protocol moco-detectron2-c4-24k/1 --engine detectron2

The protocols are the presets of transfer/detection/protocols.py (every setting and its source in
their docstrings). Engine "torchvision" (default, always available) assembles the detector from
torchvision's parts (transfer/detection/models.py); engine "detectron2" runs detectron2 where it is
installed (detection/detectron2_runner.py). The ResNet protocols take ResNets and
selfpatch-coco-maskrcnn-vit-1x/1 takes ViTs (the pyramid of detection/vit_pyramid.py); each
refuses the other family with one sentence naming the protocol to use. Both engines write the
same result record: family "detection", task.protocol = the protocol's name; a flag that changes
a protocol setting (--norm, sizes, batch, --num-heads, ...) records it as "<name>-custom/<version>"
with the changes under selection.overrides, so a modified run never shares a table column with
the real protocol. The run directory (--run-dir)
holds checkpoints/last.pt and log.jsonl; an interrupted run resumes from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from evaluate import harness, series
from pretrain import log_sinks
from pretrain.identity import settings_identity
from results import bootstrap
from results.record import Task
from slurm import submit as slurm_submit
from transfer.detection import models as detection_models
from transfer.detection import protocols
from transfer.detection import train as detection_train
from transfer.detection.coco_eval import coco_metrics, coco_results
from transfer.detection.data import CocoDetection, VocDetection
from transfer.detection.protocols import PAPER_PROTOCOL, PROTOCOLS, Protocol, other_family
from transfer.detection.vit_pyramid import detection_encoder
from transfer.detection.voc_eval import (
    Detections,
    GroundTruth,
    ap50_interval,
    voc_detection_metrics,
)

ENGINES = ("torchvision", "detectron2")
# Flags that change a protocol setting; giving one renames the recorded protocol "<name>-custom/v".
OVERRIDES = (
    "model",
    "norm",
    "batch_size",
    "base_lr",
    "train_sizes",
    "test_size",
    "max_size",
    "roi_batch_per_image",
    "rpn_post_nms_test",
    "detections_per_image",
    "num_heads",
)


@dataclass(frozen=True)
class DetectionConfig:
    """Detection transfer of a pretrained backbone; the protocol's settings are its preset's
    (transfer/detection/protocols.py). `max_steps` shortens a run (smoke tests) like --epochs
    elsewhere; the fields after it override protocol settings and rename the protocol."""

    ckpt: str  # export, training checkpoint, torchvision state dict, or random:<arch>
    protocol: str = PAPER_PROTOCOL  # a key of PROTOCOLS
    engine: str = "torchvision"  # or "detectron2" (external, where installed)
    data: str | None = None  # VOCdevkit directory (VOC protocols) or COCO directory
    arch: str | None = None  # foreign weights only; default: metadata, else inferred
    label: str | None = None  # checkpoint label in the record; default: the file's metadata
    run_dir: str | None = None  # default: harness.work_dir, <runs>/evals/detection/...
    records: str | None = None  # default: records/ beside the run dir of ckpt, else ./records
    device: str | None = None  # default: cuda when available
    seed: int = 0  # data order, flips, new layers' initialisation
    num_workers: int = field(default_factory=harness.default_num_workers)  # CPUs, at most 8
    ckpt_every_min: float = 10.0
    max_steps: int | None = None  # stop after this many iterations; None: the protocol's
    log_to: str = ""  # step lines also to tensorboard, wandb (log_sinks.add_log_argument)
    model: str | None = None
    norm: str | None = None
    batch_size: int | None = None
    base_lr: float | None = None
    train_sizes: tuple[int, ...] | None = None
    test_size: int | None = None
    max_size: int | None = None
    roi_batch_per_image: int | None = None
    rpn_post_nms_test: int | None = None
    detections_per_image: int | None = None
    num_heads: int | None = None  # ViT protocols: attention heads of the fine-tuned ViT

    @property
    def dataset(self) -> str:
        """The record's task.dataset (the protocol's)."""
        return PROTOCOLS[self.protocol]().dataset


def resolve_protocol(config: DetectionConfig) -> tuple[Protocol, dict]:
    """(protocol with the config's overrides, {setting: [preset value, given value]})."""
    if config.protocol not in PROTOCOLS:
        raise harness.InputError(
            f"unknown protocol {config.protocol!r}; choose one of {', '.join(PROTOCOLS)}"
        )
    if config.engine not in ENGINES:
        raise harness.InputError(f"unknown engine {config.engine!r}; choose one of {ENGINES}")
    preset = PROTOCOLS[config.protocol]()
    given = {n: getattr(config, n) for n in OVERRIDES if getattr(config, n) is not None}
    changed = {n: [getattr(preset, n), v] for n, v in given.items() if getattr(preset, n) != v}
    if config.model is not None and config.model not in detection_models.MODELS:
        raise harness.InputError(
            f"--model must be one of {detection_models.MODELS}, not {config.model}"
        )
    if config.model in detection_models.MASK_MODELS and preset.dataset != "coco":
        raise harness.InputError(
            f"--model {config.model} needs instance masks: use a COCO protocol"
        )
    vit_models = detection_models.VIT_MODELS
    if config.model is not None and (config.model in vit_models) != (preset.backbone == "vit"):
        family = "ViT" if preset.backbone == "vit" else "ResNet"
        wanted = [m for m in detection_models.MODELS if (m in vit_models) == (family == "ViT")]
        raise harness.InputError(
            f"{preset.name} builds a {family} detector: --model must be "
            f"{' or '.join(wanted)}, not {config.model}"
        )
    if config.num_heads is not None and preset.backbone != "vit":
        raise harness.InputError(f"--num-heads applies to the ViT protocols, not {preset.name}")
    if config.norm is not None and config.norm not in detection_models.NORMS:
        raise harness.InputError(
            f"--norm must be one of {detection_models.NORMS}, not {config.norm}"
        )
    if config.max_steps is not None and config.max_steps < 1:
        raise harness.InputError(f"--max-steps must be at least 1, not {config.max_steps}")
    protocol = dataclasses.replace(preset, **given)
    if changed:
        name, version = preset.name.split("/")
        protocol = dataclasses.replace(protocol, name=f"{name}-custom/{version}")
    return protocol, changed


def load_datasets(protocol: Protocol, data: str | None):
    """(train set, test set) of the protocol from the directory `data`."""
    if data is None:
        what = "a COCO directory" if protocol.dataset == "coco" else "the VOCdevkit directory"
        raise harness.InputError(f"pass --data with {what} ({protocol.name})")
    if protocol.dataset == "coco":
        masks = protocol.model in detection_models.MASK_MODELS
        (train_split,) = protocol.train_sets
        train = CocoDetection(data, train_split, with_masks=masks, train=True)
        return train, CocoDetection(data, protocol.test_set, with_masks=masks, train=False)
    train = VocDetection(data, [tuple(s.split("-")) for s in protocol.train_sets])
    return train, VocDetection(data, [tuple(protocol.test_set.split("-"))])


def detector_spec(protocol: Protocol, num_classes: int, metadata: dict):
    """The DetectorSpec of a protocol; image mean/std from the checkpoint when it states them."""
    known = metadata.get("preprocessing") or {}
    fields = {f.name for f in dataclasses.fields(detection_models.DetectorSpec)}
    values = {k: v for k, v in dataclasses.asdict(protocol).items() if k in fields}
    if known:
        values.update(image_mean=tuple(known["mean"]), image_std=tuple(known["std"]))
    return detection_models.DetectorSpec(num_classes=num_classes, **values)


def build_loaded_detector(encoder, metadata: dict, protocol: Protocol, num_classes: int):
    """(detector, number of backbone tensors checked to hold the checkpoint's values). A ViT is
    rebuilt with the protocol's heads and drop path first (vit_pyramid.detection_encoder)."""
    reference = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    spec = detector_spec(protocol, num_classes, metadata)
    if protocol.backbone == "vit":
        encoder = detection_encoder(
            encoder, metadata, num_heads=protocol.num_heads, drop_path=protocol.drop_path
        )
    with torch.random.fork_rng(devices=[]):
        detector = detection_models.build_detector(encoder, spec)
    return detector, detection_models.check_backbone_loaded(detector, reference, spec.model)


def evaluate(protocol: Protocol, predictions: list[dict], test_set) -> tuple[dict, dict]:
    """(metrics, per-class details) of predictions on the test set (VOC AP or COCOeval)."""
    if protocol.dataset == "coco":
        results = coco_results(predictions, test_set.image_ids, test_set.category_ids)
        masks = protocol.model in detection_models.MASK_MODELS
        return coco_metrics(test_set.coco, results, masks), {}
    ground_truth = [
        GroundTruth(t["boxes"].numpy(), t["labels"].numpy(), t["difficult"].numpy())
        for _, t in test_set.items
    ]
    detections = [Detections(p["boxes"], p["labels"], p["scores"]) for p in predictions]
    metrics, details = voc_detection_metrics(
        detections, ground_truth, len(test_set.classes), protocol.use_07_metric
    )
    low, high = ap50_interval(
        detections, ground_truth, len(test_set.classes), protocol.use_07_metric
    )
    details["uncertainty"] = (
        {"ap50": [round(low, 4), round(high, 4)]},
        {"count": len(ground_truth), "bootstrap": bootstrap.settings()},
    )
    return metrics, details


def run_torchvision(
    config, protocol, inputs, run: detection_train.RunSettings
) -> tuple[dict, dict]:
    """Build, fine-tune (resuming), re-estimate BN (precise BN), predict, evaluate."""
    torch.manual_seed(config.seed)  # new layers' initialisation
    detector, loaded = build_loaded_detector(
        inputs.encoder, inputs.metadata, protocol, len(inputs.train_set.classes)
    )
    summary = detection_train.train(detector, inputs.train_set, protocol, run)
    summary["precise_bn_layers"] = detection_train.precise_bn(
        detector, inputs.train_set, protocol, run
    )
    started = time.monotonic()
    predictions = detection_train.predict(detector, inputs.eval_set, run.device, config.num_workers)
    metrics, details = evaluate(protocol, predictions, inputs.eval_set)
    uncertainty = details.pop("uncertainty", ({}, {}))
    selection = {
        **summary,
        "backbone_tensors_loaded": loaded,
        "eval_seconds_per_image": (time.monotonic() - started) / max(len(inputs.eval_set), 1),
        **{k: [None if a is None else round(100 * a, 3) for a in v] for k, v in details.items()},
    }
    return {k: round(float(v), 4) for k, v in metrics.items()}, selection, uncertainty


def prepare(
    config: DetectionConfig, protocol: Protocol
) -> tuple[harness.EvalInputs, detection_train.RunSettings]:
    """Validated inputs (encoder, data, device, records dir) and the run's settings."""
    inputs = harness.open_dense_inputs(
        config,
        config.seed,
        protocol=protocol.name,
        takes=protocol.backbone,
        alternatives=other_family(protocol),
    )
    inputs.train_set, inputs.eval_set = load_datasets(protocol, config.data)
    inputs.eval_split = protocol.split
    inputs.work_dir = harness.work_dir(
        "detection",
        protocol.name,
        inputs.metadata,
        ckpt=config.ckpt,
        records=config.records,
        run_dir=config.run_dir,
        variant=f"seed{config.seed}",
    )
    identity = {
        "protocol": settings_identity(protocol, protocols.ADDED_FIELDS),
        "engine": config.engine,
        "weights_sha256": inputs.metadata["weights_sha256"],
        "seed": config.seed,
    }
    run = detection_train.RunSettings(
        run_dir=inputs.work_dir,
        identity=identity,
        device=inputs.device,
        seed=config.seed,
        num_workers=config.num_workers,
        ckpt_every_min=config.ckpt_every_min,
        max_iters=config.max_steps,
        log_to=log_sinks.check_log_to(config.log_to),
    )
    return inputs, run


def parse_config(argv: list[str] | None) -> DetectionConfig:
    """DetectionConfig from the command line."""
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="python -m transfer.detection",
        description=__doc__.split("\n")[0],
        epilog="Protocols: see the presets in transfer/detection/protocols.py.",
    )
    harness.add_input_arguments(
        parser,
        "an export (<run>/exports/backbone-*.pt), a training checkpoint, a torchvision ResNet "
        "state dict, or random:<arch> (baseline)",
    )
    add = parser.add_argument
    add("--protocol", help=f"one of {', '.join(PROTOCOLS)} (default {PAPER_PROTOCOL})")
    add("--engine", help="torchvision (built in, default) or detectron2 (must be installed)")
    add("--data", help="the VOCdevkit directory (VOC2007/, VOC2012/) or the COCO directory")
    add(
        "--run-dir",
        help="checkpoints and log.jsonl of this fine-tuning run (resumes if present; default: "
        "<runs>/evals/detection/<protocol>/<sha8>-seed<seed>)",
    )
    add("--seed", type=int, help="data order, flips and new layers' initialisation (default 0)")
    add("--seeds", type=int, nargs="+", help=series.SEEDS_HELP)
    add("--ckpt-every-min", type=float, help="minutes between checkpoints (default 10)")
    add("--max-steps", type=int, help="stop after N iterations (smoke runs); schedule unchanged")
    group = parser.add_argument_group("protocol overrides (recorded as '<protocol>-custom')")
    group.add_argument("--model", help=f"one of {detection_models.MODELS} (mask-fpn: COCO)")
    group.add_argument("--norm", help=f"one of {detection_models.NORMS}")
    group.add_argument("--batch-size", type=int, help="images per iteration")
    group.add_argument("--base-lr", type=float, help="base learning rate")
    group.add_argument("--train-sizes", type=int, nargs="+", help="training resize sizes")
    group.add_argument("--test-size", type=int, help="test resize size")
    group.add_argument("--max-size", type=int, help="cap of the long side (shortest-edge)")
    group.add_argument("--roi-batch-per-image", type=int, help="sampled RoIs per image")
    group.add_argument("--rpn-post-nms-test", type=int, help="proposals per image at test")
    group.add_argument("--detections-per-image", type=int, help="detections kept per test image")
    group.add_argument(
        "--num-heads",
        type=int,
        help="ViT protocols: attention heads of the fine-tuned ViT (default: the protocol's; "
        "SelfPatch's config: 8 on ViT-S/16)",
    )
    log_sinks.add_log_argument(parser)
    slurm_submit.add_slurm_arguments(parser)  # handled before parsing: submit_cli_if_requested
    args = parser.parse_args(argv)
    if args.train_sizes is not None:
        args.train_sizes = tuple(args.train_sizes)
    return harness.config_from_args(DetectionConfig, args)


def main(argv: list[str] | None = None) -> None:
    """One run, or one per seed of --seeds (series.per_seed_argvs): here in turn, or with
    --slurm one job each (a job array)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    with harness.error_boundary():
        argvs = series.per_seed_argvs(argv)
        if slurm_submit.submit_cli_if_requested(  # --slurm: a job (one per seed)
            "transfer.detection", argv, tasks=series.per_seed_argvs
        ):
            return
    series.run_series(argvs, evaluate_one, what="seed")


def evaluate_one(argv: list[str]) -> None:
    """The detection protocol for one seed and its record."""
    config = parse_config(argv)
    with harness.error_boundary():
        protocol, changed = resolve_protocol(config)
        if config.engine == "detectron2":
            from transfer.detection import detectron2_runner

            if changed:
                raise harness.InputError(
                    "--engine detectron2 runs the protocol as published; drop "
                    f"the overrides {sorted(changed)}"
                )
            detectron2_runner.require_detectron2(protocol.name)
        inputs, run = prepare(config, protocol)

        def run_engine() -> tuple[dict, dict, tuple]:
            uncertainty = ({}, {})  # the detectron2 engine gives no per-image data
            if config.engine == "detectron2":
                metrics, selection = detectron2_runner.run(config, protocol, inputs, run)
            else:
                metrics, selection, uncertainty = run_torchvision(config, protocol, inputs, run)
            selection = {
                "engine": config.engine,
                "run_dir": str(run.run_dir),
                **selection,
                "protocol_settings": dataclasses.asdict(protocol),
                "overrides": changed,
            }
            return metrics, json.loads(json.dumps(selection, default=_plain)), uncertainty

        task = Task("detection", config.dataset, inputs.eval_split, protocol.name)
        record, path = harness.record_run(inputs, config, task, run_engine)
    shown = " ".join(f"{k} {v:.2f}" for k, v in record.metrics.items())
    print(
        f"detection {protocol.name} {record.task.dataset}/{record.task.split} "
        f"[{record.checkpoint.label}, {record.checkpoint.weights_sha256[:8]}]: {shown} "
        f"({config.engine}) -> {path}"
    )


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


if __name__ == "__main__":
    main()
