"""THE sample-predictions file: the few test images a report shows, its format and its reader.

A dense-transfer run (segmentation, depth) keeps its first SAMPLE_COUNT evaluated images, in the
evaluated order (deterministic), and writes them as one `SAMPLES_FILE` in its run directory
(transfer/samples.py writes it); the record names it in `selection["samples"]` as
{"file": absolute path, "sha256": of the file's bytes}, and the report (results/report.py) draws
input / truth / prediction side by side. numpy only: results/ never imports torch.

Format: one `np.savez_compressed` archive (no pickled objects), arrays
    images      uint8 [k, H, W, 3]  what the test input shows, at the truth's size
    truth       [k, H, W]           depth: float32 metres, 0 = no measurement;
    prediction  [k, H, W]             segmentation: int64 class indices, 255 = ignore
    kind        str, 0-d            "depth" or "segmentation"
Images of different sizes are padded bottom/right to the largest: white pixels, and truth and
prediction 255 (segmentation) or 0 (depth: nothing to show), so padding reads as blank.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np

from results.errors import ByolBenchError

SAMPLES_FILE = "samples.npz"
SAMPLE_COUNT = 4  # the first 4 evaluated images
IGNORE = 255  # segmentation: a pixel that is not scored (VOC's boundaries, ADE20K's "other")
KIND_DTYPES = {"depth": np.float32, "segmentation": np.int64}  # of truth and prediction
BLANK = {"depth": 0, "segmentation": IGNORE}  # truth/prediction value of a pixel with nothing


class SamplesError(ByolBenchError, ValueError):
    """A samples file or its arrays that do not follow the format above."""


def check_samples(images, truth, prediction, kind: str) -> None:
    """Raise SamplesError (one sentence) unless the arrays follow the format above."""
    if kind not in KIND_DTYPES:
        raise SamplesError(f"unknown samples kind {kind!r}; use one of {tuple(KIND_DTYPES)}")
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise SamplesError(
            f"sample images must be uint8 [k, H, W, 3], not {images.dtype} {list(images.shape)}"
        )
    if len(images) < 1:
        raise SamplesError("samples need at least one image")
    dtype = np.dtype(KIND_DTYPES[kind])
    for name, array in (("truth", truth), ("prediction", prediction)):
        if array.shape != images.shape[:3] or array.dtype != dtype:
            raise SamplesError(
                f"{kind} sample {name} must be {dtype} {list(images.shape[:3])} (the images' "
                f"[k, H, W]), not {array.dtype} {list(array.shape)}"
            )


def load_samples(path: str | Path) -> dict:
    """{"images", "truth", "prediction": arrays, "kind": str} of a samples file, checked."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            loaded = {name: archive[name] for name in ("images", "truth", "prediction", "kind")}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise SamplesError(f"{path} is not a readable samples file ({error})") from error
    loaded["kind"] = str(loaded["kind"])
    check_samples(loaded["images"], loaded["truth"], loaded["prediction"], loaded["kind"])
    return loaded


def load_recorded(entry: dict) -> dict:
    """load_samples of a record's `selection["samples"]`, refused (SamplesError) when the file
    is missing or its SHA-256 differs from the record's (replaced or damaged since)."""
    if not isinstance(entry, dict) or not {"file", "sha256"} <= entry.keys():
        raise SamplesError(f"selection.samples {entry!r} does not name a file and its sha256")
    path = Path(entry["file"])
    if not path.is_file():
        raise SamplesError(f"{path} is missing")
    if hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
        raise SamplesError(f"{path} has changed since its record was written (sha256 differs)")
    return load_samples(path)
