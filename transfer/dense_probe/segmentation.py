"""The frozen linear segmentation probe on VOC2012 / ADE20K: cached maps -> BN + 1x1 conv.

    python -m transfer.segmentation --protocol frozen-linear-seg/1 --ckpt X --data VOC2012/
    python -m transfer.segmentation --protocol frozen-linear-seg-ade20k/1 --ckpt X --data ADE/

The segmentation CLI (transfer/segmentation/cli.py) loads the checkpoint and the data with the
readers of transfer/segmentation/data.py and writes the one record; this module runs the protocol
(transfer/dense_probe/protocols.py): feature maps (a ResNet's conv5, a ViT's normed last-block patch
tokens: maps.py) of train and of the reported split extracted once and cached, every candidate LR
trained at once on train minus the held-out images (transfer/segmentation/data.py:hold_out_images),
the best on the held-out images retrained on all of train and scored (mIoU over the view's pixels)
on the reported split. Each image's metrics.image_counts go to `<work dir>/per_image_counts.npy` for
the CLI's bootstrap interval. DINOv2's linear probe on a cached view (OUR adaptation for ResNets):
not a published protocol.
"""

from __future__ import annotations

from evaluate import harness
from transfer.dense_probe.features import DenseView
from transfer.dense_probe.protocols import ProbeProtocol
from transfer.dense_probe.runner import check_view, run_on_inputs
from transfer.dense_probe.train import segmentation_task
from transfer.segmentation.engine import PER_IMAGE_FILE


def segmentation_view(settings: ProbeProtocol, inputs: harness.EvalInputs) -> DenseView:
    """The protocol's fixed view: shorter side `crop`, centre crop, the checkpoint's mean/std."""
    return DenseView(settings.crop, inputs.preprocessing.mean, inputs.preprocessing.std)


def check_segmentation_inputs(settings: ProbeProtocol, inputs: harness.EvalInputs) -> None:
    """InputError if the encoder cannot read the view (a ViT whose patches do not divide
    --crop); the segmentation CLI calls it before anything is written."""
    check_view(settings, inputs, segmentation_view(settings, inputs), "--crop")


def run_frozen_segmentation(
    settings: ProbeProtocol, inputs: harness.EvalInputs, num_workers: int = 0, log_to: str = ""
) -> tuple[dict, dict]:
    """(metrics {"miou"}, selection) of the probe protocol `settings` on the inputs' data
    (runner.py); the per-image counts [N, 3, K] of the reported split are saved in
    inputs.work_dir."""
    view = segmentation_view(settings, inputs)
    num_classes = inputs.train_set.num_classes
    metrics, selection = run_on_inputs(
        settings,
        inputs,
        view,
        lambda channels: segmentation_task(channels, num_classes),
        PER_IMAGE_FILE,
        num_workers,
        log_to,
    )
    selection["seeds"] = [{"seed": settings.seeds[0], "miou": metrics["miou"]}]
    return metrics, selection
