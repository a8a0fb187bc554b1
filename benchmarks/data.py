"""End-to-end BYOL loader throughput: decode + both views, CPU path vs device path (not a test).

    python -m benchmarks.data                       # CPU: 2,000 JPEGs of 500x375 -> 224 px views
    python -m benchmarks.data --device cuda --workers 4 8 12 16

Writes an ImageFolder of JPEGs once (default /tmp/byol-bench-data-bench; smooth random images, 10
classes, quality 90), then times the pretraining loader of pretrain/views.py with ImageNet's T / T'
(BYOL v3, Table 6) at 224 px:

- loader path: workers decode, crop, resize and apply every photometric op per image (`TwoViews`);
  the batch is copied to the device as float.
- device path: workers decode, crop and resize to uint8 (`TwoCrops`); the batch is copied as uint8
  and `finish_on_device` applies the photometric ops to the whole batch on `--device`.

img/s counts images (each gives two views) in steady state: timing starts after the batches that
the workers had prefetched (workers x 4) are consumed, so it measures production, not a full
queue; the file list is repeated to give enough batches (the page cache holds the files, as it would
a data set read every epoch). The device is synchronised at the end. Compare with
benchmarks/step.py's step rate: the loader must keep up with the step. The last line printed is
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from pretrain.augment import byol_views
from pretrain.data import ImageFolderDataset, dataset_stats
from pretrain.views import build_pretrain_loader, finish_on_device

MEAN, STD = dataset_stats("imagenet")


def write_image_folder(root: Path, num_images: int, size: tuple[int, int], seed: int = 0) -> Path:
    """num_images JPEGs of size (width, height) in 10 class folders; kept if already there."""
    marker = root / f".complete-{num_images}-{size[0]}x{size[1]}"
    if marker.exists():
        return root
    rng = np.random.default_rng(seed)
    width, height = size
    for index in tqdm(range(num_images), desc=f"writing {num_images} JPEGs", dynamic_ncols=True):
        folder = root / f"class_{index % 10:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, (height // 25 + 1, width // 25 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)  # smooth content
        noise = rng.integers(-12, 13, (height, width, 3))
        pixels = np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{index:05d}.jpg", quality=90)
    marker.touch()
    return root


def loader_rate(
    dataset: ImageFolderDataset,
    augment_on: str,
    workers: int,
    device: torch.device,
    batch_size: int,
    batches: int,
    skip: int,
) -> float:
    views = byol_views()
    loader, sampler = build_pretrain_loader(
        dataset,
        view_1=views[0],
        view_2=views[1],
        out_size=224,
        batch_size=batch_size,
        seed=0,
        rank=0,
        world_size=1,
        num_workers=workers,
        mean=MEAN,
        std=STD,
        augment_on=augment_on,
    )
    sampler.set_epoch(0)
    skip = max(skip, 4 * workers + 1)  # drain what the workers prefetched during start-up
    if (skip + batches) * batch_size > len(dataset):
        raise ValueError("the data set is too small for --batches after the prefetched batches")
    seen, started = 0, None
    for position, batch in enumerate(loader):
        if augment_on == "device":
            view_1, view_2, _ = finish_on_device(batch, device, views, MEAN, STD)
        else:
            view_1 = batch[0].to(device, non_blocking=True)
            view_2 = batch[1].to(device, non_blocking=True)
        if position == skip - 1:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
        elif position >= skip:
            seen += view_1.shape[0]
        if position == skip + batches - 1:
            break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    del view_2
    return seen / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.data", description=__doc__.splitlines()[0], allow_abbrev=False
    )
    parser.add_argument("--device", default="cpu", help="where the device path finishes views")
    parser.add_argument("--root", default="/tmp/byol-bench-data-bench", help="ImageFolder to write")
    parser.add_argument("--num-images", type=int, default=2000, help="JPEGs to write (500x375)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="loader workers")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per setting")
    parser.add_argument(
        "--skip", type=int, default=2, help="untimed batches (at least workers x 4 + 1)"
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dataset = ImageFolderDataset(write_image_folder(Path(args.root), args.num_images, (500, 375)))
    needed = (args.batches + 4 * max(args.workers) + 1) * args.batch_size
    repeats = -(-needed // len(dataset))
    dataset.paths, dataset.targets = dataset.paths * repeats, dataset.targets * repeats
    rates: dict[str, dict[int, float]] = {"loader": {}, "device": {}}
    print(f"\nBYOL loader img/s (decode + 2 views at 224 px), views finished on {device}")
    print(f"{'workers':>8}{'loader path':>14}{'device path':>14}")
    for workers in args.workers:
        for augment_on in rates:
            rates[augment_on][workers] = loader_rate(
                dataset, augment_on, workers, device, args.batch_size, args.batches, args.skip
            )
        print(f"{workers:>8}{rates['loader'][workers]:>14.1f}{rates['device'][workers]:>14.1f}")
    print(json.dumps({"device": str(device), "img_per_s": rates, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
