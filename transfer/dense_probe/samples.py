"""The report's pictures of a frozen dense probe: its first test images, truth and prediction.

The retrained probe (train.py:run_probe's `on_final`) predicts the first SAMPLE_COUNT evaluated
images from their cached features; the images are shown as the probe saw them (the fixed view,
before normalisation) beside the view's labels or depth, in results/samples.py's format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from results.samples import SAMPLE_COUNT, SAMPLES_FILE
from transfer.dense_probe.features import DenseFeatures, DenseSet, DenseView
from transfer.dense_probe.train import DenseTask, feature_batch
from transfer.samples import SampleKeeper

KINDS = {"seg": ("segmentation", torch.int64), "depth": ("depth", torch.float32)}


@torch.no_grad()
def probe_samples(
    task: DenseTask,
    probes: torch.nn.Module,
    data: DenseFeatures,
    images: DenseSet,
    view: DenseView,
    work_dir: Path,
    device,
) -> dict:
    """Write `<work_dir>/samples.npz` of the probe's first head on the first evaluated images;
    returns the record's selection["samples"] entry."""
    kind, dtype = KINDS[task.name]
    index = np.arange(min(SAMPLE_COUNT, len(images)))
    features, targets = feature_batch(data, index, device)
    was_training = probes.training
    probes.eval()
    predictions = task.predict(probes.head_forward(0, probes.prepare(features)), targets)
    probes.train(was_training)
    keeper = SampleKeeper(kind, len(index))
    for i in index:
        pixels, _ = view.resized(*images.load(int(i)))
        keeper.keep(pixels.round().to(torch.uint8), targets[i].to(dtype), predictions[i].to(dtype))
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    return keeper.save(Path(work_dir) / SAMPLES_FILE)
