"""Writing the few test predictions a report shows (the format: results/samples.py).

The dense engines (transfer/segmentation/engine.py, transfer/depth/) hand every evaluated image
to a SampleKeeper, which keeps the first SAMPLE_COUNT (image, truth, prediction) triples in the
evaluated order and saves them as `<run dir>/samples.npz` at the end; `save_samples` writes the
file atomically (results/atomic.py) and returns the record's `selection["samples"]` entry.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import torch

from results.atomic import write_atomic
from results.samples import BLANK, SAMPLE_COUNT, check_samples


def save_samples(path: str | Path, images, truth, prediction, kind: str) -> dict:
    """Write the samples file (results/samples.py's format) atomically; returns
    {"file": resolved path, "sha256": of its bytes} for the record's selection["samples"].
    Arrays of the wrong shape or dtype are refused with a one-sentence ValueError."""
    images, truth, prediction = (np.asarray(a) for a in (images, truth, prediction))
    check_samples(images, truth, prediction, kind)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, images=images, truth=truth, prediction=prediction, kind=np.array(kind)
    )
    payload = buffer.getvalue()
    written = write_atomic(path, payload)
    return {"file": str(written.resolve()), "sha256": hashlib.sha256(payload).hexdigest()}


def as_array(value) -> np.ndarray:
    """A tensor (any device) or array as a numpy array, dtype unchanged."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


class SampleKeeper:
    """The first `count` evaluated (image, truth, prediction) triples of a run, then one file.

    keep(image uint8 [3, H, W], truth [H, W], prediction [H, W]) per evaluated image (tensors or
    arrays, truth/prediction already in the kind's dtype); save(path) pads them to one size
    (results/samples.py) and writes the file.
    """

    def __init__(self, kind: str, count: int = SAMPLE_COUNT) -> None:
        self.kind, self.count = kind, count
        self.kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    @property
    def full(self) -> bool:
        return len(self.kept) >= self.count

    def keep(self, image, truth, prediction) -> None:
        """Keep this triple if fewer than `count` are kept (later images are ignored)."""
        if not self.full:
            hwc = as_array(image).transpose(1, 2, 0)  # [3, H, W] -> [H, W, 3]
            self.kept.append((hwc, as_array(truth), as_array(prediction)))

    def save(self, path: str | Path) -> dict:
        """save_samples of the kept triples, padded bottom/right to the largest height and
        width (white image, blank truth and prediction)."""
        if not self.kept:
            raise ValueError("no evaluated image was kept; call keep() before save()")
        height = max(image.shape[0] for image, _, _ in self.kept)
        width = max(image.shape[1] for image, _, _ in self.kept)
        blank = BLANK[self.kind]
        images, truths, predictions = [], [], []
        for image, truth, prediction in self.kept:
            pad = ((0, height - image.shape[0]), (0, width - image.shape[1]))
            images.append(np.pad(image, (*pad, (0, 0)), constant_values=255))
            truths.append(np.pad(truth, pad, constant_values=blank))
            predictions.append(np.pad(prediction, pad, constant_values=blank))
        return save_samples(
            path, np.stack(images), np.stack(truths), np.stack(predictions), self.kind
        )
