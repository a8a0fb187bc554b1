"""Cost of the linear-probe sweep, of feature extraction and of kNN; prints figures (not a test).

    python -m benchmarks.linear                      # CPU, small sizes
    python -m benchmarks.linear --device cuda --arch resnet50 --image-size 224 --num-images 4096

1. Sweep cost: wall time of the 5-LR sweep (all heads on the same frozen features of each batch,
   evaluate/heads.py) divided by a 1-LR run, on the paper protocol's path (augmented images through
   the frozen backbone) and on the cached-feature path. Target for the paper path: <= 1.3.
2. Feature extraction: images/s of the frozen encoder on the centre-crop view (decode, resize,
   normalise and forward; evaluate/features.py:extract_features).
3. kNN: seconds for 60k x 10k random features of dimension 512 (k in {10, 20, 100, 200}).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, fields

import torch

from evaluate.features import extract_features, load_encoder
from evaluate.heads import fit_heads, tensor_batches
from evaluate.knn import knn_accuracy
from evaluate.linear import LinearConfig
from evaluate.transforms import Preprocessing, ProbeTrainView
from pretrain.data import SyntheticDataset
from pretrain.sampling import SeededBatches

LRS = LinearConfig.lrs  # byol-paper/2's grid (docs/protocols.md)


@dataclass(frozen=True)
class BenchConfig:
    """Sizes of the three measurements (defaults: a quick CPU run)."""

    arch: str = "resnet18"
    image_size: int = 32
    num_images: int = 512  # images of the sweep and extraction measurements
    batch_size: int = 128
    epochs: int = 2
    num_workers: int = 0
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    knn_train: int = 60_000
    knn_test: int = 10_000
    knn_dim: int = 512
    cached_features: int = 50_000  # samples of the cached-feature sweep measurement


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, fn) -> float:
    _synchronize(device)
    started = time.perf_counter()
    fn()
    _synchronize(device)
    return time.perf_counter() - started


def sweep_ratio_images(config: BenchConfig, encoder, images, device) -> tuple[float, float]:
    """(5-LR seconds, 1-LR seconds) of the paper path: augmented views through the encoder."""
    prep = Preprocessing(config.image_size, (0.5,) * 3, (0.25,) * 3)
    sampler = SeededBatches(len(images), config.batch_size, 0, last="keep")
    loader = torch.utils.data.DataLoader(
        ProbeTrainView(images, prep, seed=0),
        batch_sampler=sampler,
        num_workers=config.num_workers,
        persistent_workers=config.num_workers > 0,
    )

    def batches(epoch: int):
        sampler.set_epoch(epoch)
        for views, labels in loader:
            with torch.no_grad():
                features = encoder(views.to(device, non_blocking=True))
            yield features, labels.to(device)

    def run(lrs):
        fit_heads(
            batches,
            lrs=lrs,
            feature_dim=encoder.feature_dim,
            num_classes=images.num_classes,
            epochs=config.epochs,
            steps_per_epoch=len(sampler),
            device=device,
            desc=f"{len(lrs)}",
        )

    run(LRS[:1])  # warm-up: allocator, kernels, loader
    return _timed(device, lambda: run(LRS)), _timed(device, lambda: run(LRS[:1]))


def sweep_ratio_cached(config: BenchConfig, device) -> tuple[float, float]:
    """(5-LR seconds, 1-LR seconds) on in-memory features (the --fast path), D=512, C=1000."""
    features = torch.randn(config.cached_features, 512)
    labels = torch.randint(0, 1000, (config.cached_features,))
    batches, steps = tensor_batches(features, labels, 1024, seed=0, device=device)

    def run(lrs):
        fit_heads(
            batches,
            lrs=lrs,
            feature_dim=512,
            num_classes=1000,
            epochs=config.epochs,
            steps_per_epoch=steps,
            device=device,
            desc=f"cached {len(lrs)} LR",
        )

    run(LRS[:1])
    return _timed(device, lambda: run(LRS)), _timed(device, lambda: run(LRS[:1]))


def extraction_rate(config: BenchConfig, encoder, images, device) -> float:
    prep = Preprocessing(config.image_size, (0.5,) * 3, (0.25,) * 3)
    view = prep.eval_dataset(images)
    kwargs = dict(batch_size=config.batch_size, num_workers=config.num_workers, device=device)
    extract_features(encoder, torch.utils.data.Subset(view, range(config.batch_size)), **kwargs)
    seconds = _timed(device, lambda: extract_features(encoder, view, **kwargs))
    return len(images) / seconds


def knn_seconds(config: BenchConfig, device) -> float:
    train = torch.randn(config.knn_train, config.knn_dim, device=device)
    test = torch.randn(config.knn_test, config.knn_dim, device=device)
    train_labels = torch.randint(0, 10, (config.knn_train,), device=device)
    test_labels = torch.randint(0, 10, (config.knn_test,), device=device)
    return _timed(
        device, lambda: knn_accuracy(train, train_labels, test, test_labels, num_classes=10)
    )


HELP = {  # BenchConfig field -> its flag's help text
    "arch": "backbone (random weights)",
    "image_size": "input size in pixels",
    "num_images": "images of the sweep and extraction measurements",
    "batch_size": "images per batch",
    "epochs": "epochs of each sweep measurement",
    "num_workers": "data-loader processes of the extraction measurement",
    "device": "cpu or cuda",
    "knn_train": "training features of the kNN measurement",
    "knn_test": "test features of the kNN measurement",
    "knn_dim": "feature dimension of the kNN measurement",
    "cached_features": "samples of the cached-feature sweep measurement",
}


def parse_config(argv: list[str] | None) -> BenchConfig:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.linear", description=__doc__, allow_abbrev=False
    )
    for field in fields(BenchConfig):
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(
            flag,
            type=type(field.default),
            default=field.default,
            help=f"{HELP[field.name]} (default: %(default)s)",
        )
    return BenchConfig(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    config = parse_config(argv)
    device = torch.device(config.device)
    encoder, _ = load_encoder(f"random:{config.arch}")
    encoder.to(device)
    images = SyntheticDataset(config.num_images, config.image_size, num_classes=10, seed=0)
    sweep_images = sweep_ratio_images(config, encoder, images, device)
    sweep_cached = sweep_ratio_cached(config, device)
    rate = extraction_rate(config, encoder, images, device)
    knn_time = knn_seconds(config, device)
    threads = torch.get_num_threads()
    print(f"\nbenchmarks.linear on {device} ({threads} threads), {config}")
    for name, (five, one) in (("images", sweep_images), ("cached", sweep_cached)):
        print(
            f"sweep cost ({name} path): 5 LRs {five:.2f} s / 1 LR {one:.2f} s = {five / one:.2f}x"
        )
    print(f"feature extraction ({config.arch}, {config.image_size} px): {rate:.0f} img/s")
    print(f"kNN {config.knn_train} x {config.knn_test}, dim {config.knn_dim}: {knn_time:.2f} s")


if __name__ == "__main__":
    main()
