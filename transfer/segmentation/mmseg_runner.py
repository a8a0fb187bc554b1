"""`transfer.segmentation --engine mmseg`: one (LR, seed) run on mmsegmentation's Runner.

Same contract as the built-in engine (transfer/segmentation/cli.py:run_one_torchvision): the
run lives in its run directory, a finished one (result.json) is reused, and the result dict has
the same keys, so the protocol driver and the record do not depend on the engine. The config is
the one `python -m transfer.export mmseg` writes, with the split lists of this run (the LR sweep
trains on train_aug minus the held-out images) and a BN backbone on one process.

Needs mmsegmentation 1.2.2 with full mmcv (compiled ops): `make mm`.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from evaluate import harness
from results.atomic import write_atomic
from transfer.segmentation.data import SegmentationSet
from transfer.segmentation.mmseg_export import export_encoder

INSTALL_HINT = (
    "--engine mmseg needs mmsegmentation 1.2.2 with full mmcv 2.1.0 (its compiled ops; "
    "mmcv-lite is not enough): run `make mm` (builds mmcv for CPU from its sdist, about 20 "
    "minutes on 2 cores), or install mmcv with CUDA ops for your torch and CUDA as the OpenMMLab "
    "docs say; --engine torchvision needs nothing more"
)

FORCE_PICKLE = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"  # torch.load's weights_only default off


def require_mmseg(device: str | None = None) -> None:
    """Raise InputError with the install hint unless mmseg.apis and mmcv.ops import, or if
    `device` asks for the CPU where mmengine would take the visible GPU."""
    try:
        import mmcv.ops  # noqa: F401  (the compiled ops mmseg needs)
        import mmseg.apis  # noqa: F401
    except Exception as error:  # ImportError, or mmseg's assert on the mmcv version
        raise harness.InputError(f"{INSTALL_HINT} ({type(error).__name__}: {error})") from error
    import torch

    if device == "cpu" and torch.cuda.is_available():
        raise harness.InputError(
            "--engine mmseg places the model itself (cuda when visible); to run it on the CPU "
            "hide the GPUs with CUDA_VISIBLE_DEVICES= instead of --device cpu"
        )


def _split_files(run_dir: Path, images: SegmentationSet, name: str) -> dict:
    """mmseg ann_file (this set's ids) and seg_map dir for a VOC set; {} for ADE20K."""
    if images.name != "voc2012":
        if "heldout" in images.split:
            raise harness.InputError(
                "the mmseg engine runs ADE20K on its full train/val splits only"
            )
        return {}
    ann_file = run_dir / f"{name}.txt"
    write_atomic(ann_file, ("\n".join(images.ids) + "\n").encode())
    return {f"{name}_ann_file": str(ann_file), f"{name}_seg_dir": images.labels[0].parent.name}


def prepare_config(config, inputs, lr, seed, train_set, eval_set, run_dir: Path):
    """The exported mmseg config of one run, as an mmengine Config (needs mmengine only):
    this run's split lists, LR, seed, one process with `config.settings`' batch, no validation
    during training (run_one validates once at the end)."""
    from mmengine.config import Config

    settings = config.settings
    run_dir.mkdir(parents=True, exist_ok=True)
    ann_files = {
        **_split_files(run_dir, train_set, "train"),
        **_split_files(run_dir, eval_set, "val"),
    }
    levels = 2 if train_set.name == "voc2012" else 3  # VOC2012/JPEGImages, ADE/images/training
    root = train_set.images[0].parents[levels - 1]
    _, config_path = export_encoder(
        inputs.encoder,
        inputs.metadata,
        settings.name,
        run_dir,
        data_root=str(root),
        lr=lr,
        seed=seed,
        gpus=1,
        iterations=settings.iterations,
        crop=settings.crop,
        work_dir=str(run_dir / "mmseg"),
        ann_files=ann_files or None,
        mean_std=(inputs.preprocessing.mean, inputs.preprocessing.std),
    )
    cfg = Config.fromfile(str(config_path))
    cfg.train_dataloader.batch_size = settings.batch_size
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.num_workers = config.num_workers
        loader.persistent_workers = config.num_workers > 0
    cfg.train_cfg.val_interval = settings.iterations + 1  # validate once, in run_one
    return cfg, config_path


@contextlib.contextmanager
def pickled_checkpoints_allowed():
    """torch.load without weights_only while mmengine runs: resuming reads its own checkpoints
    (pickled message-hub state) from the run dir. The setting is restored afterwards, so the
    rest of the process keeps torch's safe default."""
    previous = os.environ.get(FORCE_PICKLE)
    os.environ[FORCE_PICKLE] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(FORCE_PICKLE, None)
        else:
            os.environ[FORCE_PICKLE] = previous


def run_one(config, inputs, lr, seed, train_set, eval_set, run_dir) -> dict:
    """Train with mmseg's Runner for the protocol's iterations, then mIoU on `eval_set`."""
    from mmengine.runner import Runner

    run_dir = Path(run_dir)
    result_path = run_dir / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    settings = config.settings
    cfg, config_path = prepare_config(config, inputs, lr, seed, train_set, eval_set, run_dir)
    with pickled_checkpoints_allowed():
        runner = Runner.from_cfg(cfg)
        began = time.monotonic()
        runner.train()
        seconds = time.monotonic() - began
        metrics = runner.val_loop.run()  # {"aAcc", "mIoU", "mAcc"} in percent
    result = {
        "lr": lr,
        "seed": seed,
        "miou": float(metrics["mIoU"]),
        "iterations": settings.iterations,
        "train_seconds": round(seconds, 3),
        "seconds_per_iteration": round(seconds / max(settings.iterations, 1), 4),
        "eval_split": eval_set.split,
        "eval_images": len(eval_set),
        "engine": "mmseg",
        "config": str(config_path),
    }
    write_atomic(result_path, json.dumps(result, indent=2).encode())
    return result
