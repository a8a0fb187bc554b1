"""The export of a pretraining run: the online encoder's self-describing metadata and its record.

`backbone_metadata` is the one description of weights pretrained here, shared by the export
(`export_run`, at the end of pretrain/train.py) and by evaluate/features.py when it reads a full
training checkpoint as if it were an export. `export_run` writes exports/backbone-<sha8>.pt
(pretrain/checkpoint.py:export_backbone) and one result record of kind "pretrain" whose id the
export's metadata carries as `pretrain_record_id`, so every evaluation record of the export names
the pretraining run it came from (results/record.py:CheckpointRef).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import torch

from pretrain.backbones import is_vit
from pretrain.checkpoint import export_backbone
from pretrain.config import PretrainConfig
from pretrain.data import dataset_stats
from pretrain.vit import VIT_ARCHS
from results import record as record_lib
from results import runlog

PRETRAIN_PROTOCOL = "byol-bench-pretrain/1"
log = logging.getLogger(__name__)


def backbone_metadata(config: dict, *, label: str, step: int, steps_per_epoch: float | None):
    """What an evaluation needs to know about the weights of `config` (a PretrainConfig as
    a dict) at `step`: architecture, input size and normalisation, training length, config.

    A ViT's also say its patch size and whether it has the [CLS] token and the final norm
    (evaluate/features.py rebuilds it from them). Fields are read with their defaults, since
    configs of runs made before the ViT methods lack them (method byol, [CLS] and norm on).
    """
    mean, std = dataset_stats(config["dataset"])
    arch = config["backbone"]
    vit = {}
    if is_vit(arch):
        vit = {
            "patch_size": VIT_ARCHS[arch][0],
            "cls_token": bool(config.get("cls_token", True)),
            "final_norm": bool(config.get("final_norm", True)),
        }
    return {
        "label": label,
        "arch": arch,
        "cifar_stem": config["cifar_stem"],
        **vit,
        "method": config.get("method", "byol"),
        "network": "teacher" if config.get("method") in ("dino", "selfpatch") else "online",
        "source": "byol-bench",
        "pretrain_epochs": step / steps_per_epoch if steps_per_epoch else None,
        "pretrain_steps": step,
        "pretrain_dataset": config["dataset"],
        "preprocessing": {
            "image_size": config["image_size"],
            "mean": list(mean),
            "std": list(std),
        },
        "config": config,
    }


def export_run(
    run_dir: Path,
    config: PretrainConfig,
    encoder_state: dict[str, torch.Tensor],
    *,
    step: int,
    steps_per_epoch: int,
    feature_dim: int,
    provenance: dict,
    wall_seconds: float,
) -> Path:
    """Export the online encoder with its metadata, then write the pretrain record; the export."""
    created = record_lib.utc_now()
    record_id = record_lib.make_record_id("pretrain", run_dir.name, created_utc=created)
    metadata = {
        **backbone_metadata(
            dataclasses.asdict(config),
            label=run_dir.name,
            step=step,
            steps_per_epoch=steps_per_epoch,
        ),
        "feature_dim": feature_dim,
        "provenance": provenance,
        "pretrain_record_id": record_id,
    }
    path = export_backbone(run_dir, encoder_state, metadata)
    log.info("exported the online encoder to %s", path)
    written = json.loads(path.with_suffix(".json").read_text())
    record = pretrain_record(run_dir, config, written, created=created, wall_seconds=wall_seconds)
    records_dir = Path(config.records) if config.records else run_dir.parent / "records"
    log.info("wrote the pretrain record %s", record_lib.write_record(records_dir, record))
    return path


def pretrain_record(
    run_dir: Path, config: PretrainConfig, metadata: dict, *, created: str, wall_seconds: float
) -> record_lib.Record:
    """The record of kind "pretrain" for an export's `metadata` (the last epoch line of
    log.jsonl: its loss and online-probe accuracy as metrics)."""
    last = runlog.epoch_lines(runlog.read_log(run_dir / "log.jsonl"))[-1]
    return record_lib.Record(
        record_id=metadata["pretrain_record_id"],
        kind="pretrain",
        status="complete",
        created_utc=created,
        checkpoint=record_lib.CheckpointRef(
            weights_sha256=metadata["weights_sha256"],
            label=metadata["label"],
            arch=metadata["arch"],
            method=metadata["method"],
            pretrain_epochs=metadata["pretrain_epochs"],
            source="byol-bench",
            path=metadata["path"],
            pretrain_record_id=metadata["pretrain_record_id"],
        ),
        task=record_lib.Task("pretrain", config.dataset, "train", PRETRAIN_PROTOCOL),
        metrics={"loss": last["loss"], "online_probe_top1": last["online_probe_test_top1"]},
        config=dataclasses.asdict(config),
        provenance=record_lib.Provenance(
            **metadata["provenance"],
            slurm_job_id=os.environ.get("SLURM_JOB_ID"),
            slurm_nodes=os.environ.get("SLURM_JOB_NODELIST"),
            wall_seconds=round(wall_seconds, 3),
        ),
    )
