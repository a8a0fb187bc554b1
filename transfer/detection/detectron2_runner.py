"""`python -m transfer.detection --engine detectron2`: the same protocol run by detectron2 itself,
where it is installed; the result record is the same as the torchvision engine's.

detectron2 has no release for torch >= 2.0 and is on neither PyPI nor Debian, so it is never a
dependency: it is imported only here, and a missing one is a clear error (INSTALL). What it runs is
protocol `moco-detectron2-c4-24k/1` exactly as `python -m transfer.export detectron2` writes it
(weights .pkl + YAML, detectron2_export.py), with MoCo's Res5ROIHeadsExtraNorm registered
(moco/detection/train_net.py), VOC2007/2012 registered from --data, PascalVOCDetectionEvaluator
(VOC2007 11-point AP) and detectron2's own checkpointing (resume from <run-dir>/detectron2).
"""

from __future__ import annotations

from pathlib import Path

from evaluate import harness
from transfer.detection import detectron2_export
from transfer.detection.protocols import MOCO_PROTOCOL

INSTALL = (
    "detectron2 is not importable in this Python environment. It has no PyPI release and no "
    "build for torch >= 2.0, so build it from source where the CUDA toolkit matches your torch: "
    "pip install 'git+https://github.com/facebookresearch/detectron2.git' (see "
    "https://detectron2.readthedocs.io/en/latest/tutorials/install.html), or run the built-in "
    "engine: --engine torchvision"
)
_SPLITS = ("2007-trainval", "2012-trainval", "2007-test")


def require_detectron2(protocol: str) -> None:
    """Raise InputError unless detectron2 imports and `protocol` is the one it runs here."""
    if protocol != MOCO_PROTOCOL:
        raise harness.InputError(
            f"--engine detectron2 runs {MOCO_PROTOCOL} (the YAML of transfer.export detectron2), "
            f"not {protocol}; use --engine torchvision for it"
        )
    try:
        import detectron2  # noqa: F401
    except ImportError as error:
        raise harness.InputError(INSTALL) from error


def _register_extra_norm_head() -> None:
    """MoCo's Res5ROIHeadsExtraNorm: Res5ROIHeads with a norm layer after res5."""
    from detectron2.layers import get_norm
    from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads

    if "Res5ROIHeadsExtraNorm" in ROI_HEADS_REGISTRY:
        return

    @ROI_HEADS_REGISTRY.register()
    class Res5ROIHeadsExtraNorm(Res5ROIHeads):
        def _build_res5_block(self, cfg):
            seq, out_channels = super()._build_res5_block(cfg)
            seq.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, out_channels))
            return seq, out_channels


def run(config, protocol, inputs, run_settings) -> tuple[dict, dict]:
    """Train and test with detectron2 in this process; (metrics, selection) for the record."""
    import detectron2
    from detectron2.config import get_cfg
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets import register_pascal_voc
    from detectron2.engine import DefaultTrainer
    from detectron2.evaluation import PascalVOCDetectionEvaluator

    _register_extra_norm_head()
    output_dir = Path(run_settings.run_dir) / "detectron2"
    weights, yaml_path = detectron2_export.export(config.ckpt, output_dir, config.arch)
    if not isinstance(yaml_path, Path):
        raise harness.InputError(f"cannot run detectron2's C4 protocol: {yaml_path}")
    names = {}
    for split in _SPLITS:
        year, image_set = split.split("-")
        names[split] = f"byol_bench_voc_{year}_{image_set}"
        if names[split] not in DatasetCatalog.list():
            register_pascal_voc(
                names[split], str(Path(config.data) / f"VOC{year}"), image_set, int(year)
            )
    cfg = get_cfg()
    cfg.merge_from_file(str(yaml_path))
    cfg.DATASETS.TRAIN = (names["2007-trainval"], names["2012-trainval"])
    cfg.DATASETS.TEST = (names["2007-test"],)
    cfg.OUTPUT_DIR, cfg.SEED = str(output_dir), config.seed
    if config.max_steps:
        cfg.SOLVER.MAX_ITER = min(config.max_steps, cfg.SOLVER.MAX_ITER)
    cfg.freeze()

    class Trainer(DefaultTrainer):
        @classmethod
        def build_evaluator(cls, cfg, dataset_name, output_folder=None):
            return PascalVOCDetectionEvaluator(dataset_name)

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=True)  # detectron2's last_checkpoint in OUTPUT_DIR
    trainer.train()
    results = Trainer.test(cfg, trainer.model)
    box = results.get("bbox") or next(iter(results.values()))["bbox"]
    metrics = {"ap50": float(box["AP50"]), "ap": float(box["AP"]), "ap75": float(box["AP75"])}
    selection = {
        "detectron2_version": detectron2.__version__,
        "weights_pkl": str(weights),
        "config_yaml": str(yaml_path),
        "max_iter": cfg.SOLVER.MAX_ITER,
    }
    return metrics, selection
