"""The frozen linear depth probe on NYU Depth v2: cached conv5 maps -> 256 linear-normalised bins.

    python -m transfer.depth --protocol frozen-linear-depth/1 --ckpt X --data NYU/ --frames NYU/sync
    python -m transfer.depth --protocol frozen-linear-depth-labelled795/1 --ckpt X --data NYU/

The depth CLI (transfer/depth/cli.py) loads the checkpoint and the NYU sets (transfer/depth/
data.py) and writes the one record; this module runs the protocol (transfer/dense_probe/
protocols.py): features of the training set and of the 654 test images extracted once at the
whole-image view and cached, every candidate LR trained at once on the training images minus the
held-out 10%, the lowest held-out rms retrained on all of them and scored on the test images
(transfer/depth/metrics.py, pooled over pixels). Each test image's pixel sums go to
`<work dir>/per_image_sums.npy` for the bootstrap interval. OUR adaptation of DINOv2's linear
depth probe to ResNets: not a published protocol.
"""

from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np
import torch

from evaluate import harness
from transfer.dense_probe.features import DenseView, cached_dense_features
from transfer.dense_probe.protocols import ProbeProtocol
from transfer.dense_probe.samples import probe_samples
from transfer.dense_probe.segmentation import EXTRACT_BATCH, heldout_indices
from transfer.dense_probe.train import depth_task, run_probe
from transfer.depth.engine import PER_IMAGE_FILE
from transfer.depth.loss import GRADIENT_LOSS_WEIGHT, gradient_loss, sigloss
from transfer.depth.metrics import depth_metrics, pixel_sums

MIN_DEPTH, MAX_DEPTH = 1e-3, 10.0  # DINOv2's NYU depth range, metres (the bins' span)


def probe_loss(prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor):
    """DINOv2's NYU linear-depth loss: SigLoss + 0.5 x GradientLoss (transfer/depth/loss.py)."""
    return sigloss(prediction, target, valid) + GRADIENT_LOSS_WEIGHT * gradient_loss(
        prediction, target, valid
    )


def image_sums(prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor):
    """One image's metrics.pixel_sums (it finds the measured pixels itself)."""
    return pixel_sums(prediction, target)


def run_frozen_depth(
    settings: ProbeProtocol, inputs: harness.EvalInputs, num_workers: int = 0
) -> tuple[dict, dict]:
    """(metrics, selection) of the probe protocol `settings` on the inputs' NYU sets; the
    per-image pixel sums of the test images are saved in inputs.work_dir."""
    started = time.monotonic()
    view = DenseView(settings.crop, *harness.checkpoint_mean_std(inputs.metadata), crop=False)

    def features_of(images):
        return cached_dense_features(
            inputs.encoder,
            inputs.metadata["weights_sha256"],
            images,
            view,
            target_dtype=np.float32,
            cache_dir=inputs.cache_dir,
            batch_size=EXTRACT_BATCH,
            num_workers=num_workers,
            device=inputs.device,
        )

    train, evaluated = features_of(inputs.train_set), features_of(inputs.eval_set)
    extracted = time.monotonic()
    heldout, heldout_name = (np.array([], dtype=np.int64), "given")
    if len(settings.lrs) > 1:
        heldout, heldout_name = heldout_indices(inputs.train_set, settings.heldout)
    task = depth_task(
        probe_loss,
        image_sums,
        depth_metrics,
        channels=train.features.shape[1],
        min_depth=MIN_DEPTH,
        max_depth=MAX_DEPTH,
    )
    samples = {}

    def keep_samples(probes) -> None:  # the report's pictures of the retrained probe
        samples.update(
            probe_samples(
                task, probes, evaluated, inputs.eval_set, view, inputs.work_dir, inputs.device
            )
        )

    metrics, selection, sums = run_probe(
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
    inputs.work_dir.mkdir(parents=True, exist_ok=True)
    np.save(inputs.work_dir / PER_IMAGE_FILE, sums.numpy())  # [N, 7]: the bootstrap's input
    selection.update(
        view=view.view_id,
        feature_shape=list(train.features.shape[1:]),
        schedule=asdict(settings.schedule),
        extract_seconds=round(extracted - started, 3),
        probe_seconds=round(time.monotonic() - extracted, 3),
        run_dir=str(inputs.work_dir.resolve()),
        train_images=len(inputs.train_set),
        eval_images=len(inputs.eval_set),
        eval_ids_sha256=inputs.eval_set.fingerprint(),
        samples=samples,
    )
    return metrics, selection
