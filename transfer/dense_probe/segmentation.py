"""The frozen linear segmentation probe on VOC2012 / ADE20K: cached conv5 maps -> BN + 1x1 conv.

    python -m transfer.segmentation --protocol frozen-linear-seg/1 --ckpt X --data VOC2012/
    python -m transfer.segmentation --protocol frozen-linear-seg-ade20k/1 --ckpt X --data ADE/

The segmentation CLI (transfer/segmentation/cli.py) loads the checkpoint and the data with the
readers of transfer/segmentation/data.py and writes the one record; this module runs the
protocol (transfer/dense_probe/protocols.py): features of train and of the reported split
extracted once and cached, every candidate LR trained at once on train minus the held-out images
(transfer/segmentation/data.py:hold_out_images), the best on the held-out images retrained on all
of train and scored (mIoU over the view's pixels) on the reported split. Each image's
metrics.image_counts go to `<work dir>/per_image_counts.npy` for the CLI's bootstrap interval.
OUR adaptation of DINOv2's linear probe to ResNets: not a published protocol.
"""

from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np

from evaluate import harness
from transfer.dense_probe.features import DenseFeatures, DenseView, cached_dense_features
from transfer.dense_probe.protocols import ProbeProtocol
from transfer.dense_probe.samples import probe_samples
from transfer.dense_probe.train import run_probe, segmentation_task
from transfer.segmentation.data import SegmentationSet, hold_out_images
from transfer.segmentation.engine import PER_IMAGE_FILE

EXTRACT_BATCH = 16  # images per backbone pass when caching


def heldout_indices(images: SegmentationSet, count: int) -> tuple[np.ndarray, str]:
    """(indices into `images` of the held-out images, their split name)."""
    _, heldout = hold_out_images(images, count)
    position = {image_id: index for index, image_id in enumerate(images.ids)}
    return np.array([position[i] for i in heldout.ids], dtype=np.int64), heldout.split


def features_of(inputs: harness.EvalInputs, images: SegmentationSet, view: DenseView, workers):
    """Cached conv5 maps and view labels of `images` under the input's encoder."""
    return cached_dense_features(
        inputs.encoder,
        inputs.metadata["weights_sha256"],
        images,
        view,
        cache_dir=inputs.cache_dir,
        batch_size=EXTRACT_BATCH,
        num_workers=workers,
        device=inputs.device,
    )


def run_frozen_segmentation(
    settings: ProbeProtocol, inputs: harness.EvalInputs, num_workers: int = 0
) -> tuple[dict, dict]:
    """(metrics {"miou"}, selection) of the probe protocol `settings` on the inputs' data; the
    per-image counts of the reported split are saved in inputs.work_dir."""
    started = time.monotonic()
    view = DenseView(settings.crop, inputs.preprocessing.mean, inputs.preprocessing.std)
    train: DenseFeatures = features_of(inputs, inputs.train_set, view, num_workers)
    evaluated: DenseFeatures = features_of(inputs, inputs.eval_set, view, num_workers)
    extracted = time.monotonic()
    heldout, heldout_name = (np.array([], dtype=np.int64), "given")
    if len(settings.lrs) > 1:
        heldout, heldout_name = heldout_indices(inputs.train_set, settings.heldout)
    task = segmentation_task(train.features.shape[1], inputs.train_set.num_classes)
    samples = {}

    def keep_samples(probes) -> None:  # the report's pictures of the retrained probe
        samples.update(
            probe_samples(
                task, probes, evaluated, inputs.eval_set, view, inputs.work_dir, inputs.device
            )
        )

    metrics, selection, counts = run_probe(
        task,
        train,
        evaluated,
        heldout,
        settings.lrs,
        settings.schedule,
        seed=settings.seeds[0],
        device=inputs.device,
        heldout_name=heldout_name,
        on_final=keep_samples,
    )
    work_dir = inputs.work_dir
    work_dir.mkdir(parents=True, exist_ok=True)
    np.save(work_dir / PER_IMAGE_FILE, counts.numpy())  # [N, 3, K]: the bootstrap's input
    selection.update(
        seeds=[{"seed": settings.seeds[0], "miou": metrics["miou"]}],
        view=view.view_id,
        feature_map=train.key["feature_map"],
        feature_shape=list(train.features.shape[1:]),
        schedule=asdict(settings.schedule),
        extract_seconds=round(extracted - started, 3),
        probe_seconds=round(time.monotonic() - extracted, 3),
        run_dir=str(work_dir.resolve()),
        train_images=len(inputs.train_set),
        eval_images=len(inputs.eval_set),
        eval_ids_sha256=inputs.eval_set.fingerprint(),
        samples=samples,
    )
    return metrics, selection
