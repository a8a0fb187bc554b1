"""THE frozen dense probe run on an evaluation's inputs, whatever the target (segmentation,
depth): the segmentation and depth CLIs hand over their inputs (encoder, training set, reported
set, work dir) and a task (train.py:DenseTask).

The feature maps of the training set and of the reported set (a ResNet's conv5, a ViT's patch grid:
maps.py:feature_map_for) are extracted once at the protocol's fixed view and cached (features.py); a
view a ViT's patches do not divide is refused first (`check_view`); with several candidate LRs, the
held-out images are the seeded draw of transfer/segmentation/data.py:hold_out_images;
train.py:run_probe chooses, retrains and scores; the retrained probe's first test predictions go to
samples.npz (samples.py) and each reported image's statistics to `<work dir>/<per_image_file>` for
the CLI's bootstrap interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict

import numpy as np

from evaluate import harness
from pretrain.config import ConfigError
from pretrain.step_log import open_trainer_log
from pretrain.vit import ViTEncoder
from transfer.dense_probe.features import DenseFeatures, DenseView, cached_dense_features
from transfer.dense_probe.maps import feature_map_for
from transfer.dense_probe.protocols import ProbeProtocol
from transfer.dense_probe.samples import probe_samples
from transfer.dense_probe.train import DenseTask, run_probe
from transfer.segmentation.data import hold_out_images

EXTRACT_BATCH = 16  # images per backbone pass when caching


def heldout_indices(images, count: int) -> tuple[np.ndarray, str]:
    """(indices into `images` of the held-out images, their split name)."""
    _, heldout = hold_out_images(images, count)
    position = {image_id: index for index, image_id in enumerate(images.ids)}
    return np.array([position[i] for i in heldout.ids], dtype=np.int64), heldout.split


def check_view(
    settings: ProbeProtocol, inputs: harness.EvalInputs, view: DenseView, flag: str
) -> None:
    """InputError unless the encoder can read `view` of the training and reported images: a
    ViT's patch size must divide the view's size (judged on each set's first image; the cache
    refuses a set whose views differ in size). `flag` sets the view's size. Called by the CLIs
    before anything is written."""
    encoder = inputs.encoder
    if not isinstance(encoder, ViTEncoder):
        return  # a ResNet reads any size
    for images in (inputs.train_set, inputs.eval_set):
        if not len(images):
            continue
        height, width = view.resized(*images.load(0))[1].shape
        try:
            encoder.grid(height, width)
        except ConfigError:
            raise harness.InputError(
                f"{settings.name}'s view of {images.name}/{images.split} is {height}x{width} px, "
                f"which {inputs.metadata['arch']}'s {encoder.patch_size} px patches do not "
                f"divide; pass {flag} with a size that makes both sides multiples of "
                f"{encoder.patch_size}"
            ) from None


def features_of(
    settings: ProbeProtocol,
    inputs: harness.EvalInputs,
    images,
    view: DenseView,
    target_dtype,
    workers,
):
    """Cached feature maps (maps.py:feature_map_for) and view targets of `images` under the
    input's encoder."""
    return cached_dense_features(
        inputs.encoder,
        inputs.metadata["weights_sha256"],
        images,
        view,
        target_dtype=target_dtype,
        feature_map=feature_map_for(inputs.encoder, settings.vit_tokens),
        cache_dir=inputs.cache_dir,
        batch_size=EXTRACT_BATCH,
        num_workers=workers,
        device=inputs.device,
    )


def run_on_inputs(
    settings: ProbeProtocol,
    inputs: harness.EvalInputs,
    view: DenseView,
    make_task: Callable[[int], DenseTask],
    per_image_file: str,
    num_workers: int = 0,
    log_to: str = "",
) -> tuple[dict, dict]:
    """(metrics, selection) of the probe protocol `settings`; `make_task(channels)` builds the
    task for the feature maps' channel count. With `log_to` (--log-to) the sweep's and the final
    fit's steps go to <work dir>/{sweep,final}/log.jsonl and those sinks."""
    started = time.monotonic()
    target_dtype = make_task(1).target_dtype
    train: DenseFeatures = features_of(
        settings, inputs, inputs.train_set, view, target_dtype, num_workers
    )
    evaluated = features_of(settings, inputs, inputs.eval_set, view, target_dtype, num_workers)
    extracted = time.monotonic()
    heldout, heldout_name = (np.array([], dtype=np.int64), "given")
    if len(settings.lrs) > 1:
        heldout, heldout_name = heldout_indices(inputs.train_set, settings.heldout)
    task, samples, work_dir = make_task(train.features.shape[1]), {}, inputs.work_dir

    def keep_samples(probes) -> None:  # the report's pictures of the retrained probe
        samples.update(
            probe_samples(task, probes, evaluated, inputs.eval_set, view, work_dir, inputs.device)
        )

    metrics, selection, stats = run_probe(
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
        open_log=lambda phase: (
            open_trainer_log(work_dir / phase, log_to, {"protocol": settings.name})
            if log_to
            else None
        ),
    )
    work_dir.mkdir(parents=True, exist_ok=True)
    np.save(work_dir / per_image_file, stats.numpy())  # the bootstrap's input
    selection.update(
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
