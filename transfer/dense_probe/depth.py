"""The frozen linear depth probe on NYU Depth v2: cached maps -> 256 linear-normalised bins.

    python -m transfer.depth --protocol frozen-linear-depth/1 --ckpt X --data NYU/ --frames NYU/sync
    python -m transfer.depth --protocol frozen-linear-depth-labelled795/1 --ckpt X --data NYU/

The depth CLI (transfer/depth/cli.py) loads the checkpoint and the NYU sets (transfer/depth/
data.py) and writes the one record; this module runs the protocol (transfer/dense_probe/
protocols.py): feature maps (a ResNet's conv5; a ViT's last-block patch tokens each with the [CLS]
token, before the final norm, as DINOv2's "lin. 1": maps.py) of the training set and of the 654 test
images extracted once at the whole-image view and cached, every candidate LR trained at once on the
training images minus the held-out 10%, the lowest held-out rms retrained on all of them and scored
on the test images (transfer/depth/metrics.py, pooled over pixels). Each test image's pixel sums go
to `<work dir>/per_image_sums.npy` for the bootstrap interval. DINOv2's linear depth probe on a
cached view (OUR adaptation for ResNets): not a published protocol.
"""

from __future__ import annotations

import torch

from evaluate import harness
from transfer.dense_probe.features import DenseView
from transfer.dense_probe.protocols import ProbeProtocol
from transfer.dense_probe.runner import check_view, run_on_inputs
from transfer.dense_probe.train import depth_task
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


def depth_view(settings: ProbeProtocol, inputs: harness.EvalInputs) -> DenseView:
    """The protocol's fixed view: the whole image, shorter side `crop`, the checkpoint's
    mean/std."""
    return DenseView(settings.crop, *harness.checkpoint_mean_std(inputs.metadata), crop=False)


def check_depth_inputs(settings: ProbeProtocol, inputs: harness.EvalInputs) -> None:
    """InputError if the encoder cannot read the view (a ViT whose patches do not divide it);
    the depth CLI calls it before anything is written."""
    check_view(settings, inputs, depth_view(settings, inputs), "--view-size")


def run_frozen_depth(
    settings: ProbeProtocol, inputs: harness.EvalInputs, num_workers: int = 0, log_to: str = ""
) -> tuple[dict, dict]:
    """(metrics, selection) of the probe protocol `settings` on the inputs' NYU sets
    (runner.py); the per-image pixel sums [N, 7] of the test images are saved in
    inputs.work_dir."""
    view = depth_view(settings, inputs)

    def make_task(channels: int):
        return depth_task(
            probe_loss,
            image_sums,
            depth_metrics,
            channels=channels,
            min_depth=MIN_DEPTH,
            max_depth=MAX_DEPTH,
        )

    return run_on_inputs(settings, inputs, view, make_task, PER_IMAGE_FILE, num_workers, log_to)
