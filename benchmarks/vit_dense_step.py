"""Seconds per fine-tuning iteration of the ViT dense protocols, and the wall time of a full run
(not a test; prints figures).

    python -m benchmarks.vit_dense_step                            # CPU: vit_tiny12_test, tiny
    python -m benchmarks.vit_dense_step --published --device cuda  # ViT-S/16, published sizes
    python -m benchmarks.vit_dense_step --published --protocols selfpatch-ade20k-semfpn-vit-40k/1

One iteration is what the engines do per step, on synthetic inputs, with the models, optimizers
and steps built by the engines' own functions from the protocol presets:
- selfpatch-coco-maskrcnn-vit-1x/1: transfer/detection/cli.py build_loaded_detector (the ViT
  rebuilt with 8 heads and drop path 0.05, the pyramid, Mask R-CNN), optim.build_optimizer (AdamW
  with the no-decay groups), optim.loss_scaler and train.train_step (fp16 autocast + GradScaler
  on CUDA, as the protocol's amp; fp32 on CPU). Synthetic images (benchmarks/detection_step.py:
  3 boxes with masks each) of short side 800 at COCO's typical 4:3, 800x1066 (the DETR
  augmentation's largest short side; the engine passes training images unresized), 1 per GPU,
  the protocol's 512 RoIs per image.
- selfpatch-ade20k-{semfpn-vit-40k,upernet-vit-160k}/1: models.build_segmenter, engine's
  build_optimizer (AdamW, no decay on pos_embed) and train_step (mmseg's all-pixel
  cross-entropy; UperNet with its auxiliary head), fp32 as the engine; random 512x512 crops with
  150 classes, at the per-GPU batch of the published configs (PER_GPU).

`--published`: random-init ViT-S/16 (`vit_small_patch16`) at those sizes. Default: the tests'
`vit_tiny12_test` (patch 4, 12 blocks) on 32x42 detection images with 8 RoIs and 2 crops of 16
px per step (patch 4 puts the pyramid's finest level at stride 1, so the 512-channel UperNet
head costs as much as at 64 px on ViT-S/16): a CPU check of the script, not a figure to quote.
On a loaded machine, --threads 1 avoids waiting on descheduled threads.

The median over --iters iterations after one warm-up is printed per protocol with the estimated
wall time of a full run (s/it x the protocol's iterations: under data parallelism one GPU's
iteration at its share of the batch is the iteration time, communication and data loading left
out), the peak GPU memory on CUDA, then one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from benchmarks.detection_step import synthetic_batch
from evaluate.features import load_encoder
from transfer.detection import protocols as detection_protocols
from transfer.detection.cli import build_loaded_detector
from transfer.detection.optim import build_optimizer as detection_optimizer
from transfer.detection.optim import loss_scaler
from transfer.detection.train import train_step as detection_train_step
from transfer.segmentation import engine as segmentation_engine
from transfer.segmentation import protocols as segmentation_protocols
from transfer.segmentation.augment import IGNORE
from transfer.segmentation.data import ADE20K_NUM_CLASSES
from transfer.segmentation.models import build_segmenter

DETECTION = detection_protocols.VIT_PROTOCOL
SEMFPN = "selfpatch-ade20k-semfpn-vit-40k/1"
UPERNET = "selfpatch-ade20k-upernet-vit-160k/1"
VIT_DENSE = (DETECTION, SEMFPN, UPERNET)
COCO_CLASSES = 80  # COCO's object categories (instances_train2017.json)
# COCO train2017 images with annotations (mmdet filter_empty_gt; detectron2 logs "117266 images
# left"): 12 epochs at batch 8 = 12 x ceil(117266 / 8) = 175,908 iterations (in_iterations)
COCO_TRAIN_IMAGES = 117_266
PER_GPU = {  # images per GPU in the published runs; the protocols state the total batch
    DETECTION: 1,  # SelfPatch's mask_rcnn_vit_small_12_p16_1x_coco.py: samples_per_gpu=1
    SEMFPN: 4,  # SelfPatch's semfpn_vit-s16_512x512_40k_ade20k.py: samples_per_gpu=4
    UPERNET: 2,  # XCiT's upernet_xcit_small_12_p16_160k_ade20k.py: 8 GPUs x 2 images
}


@dataclass(frozen=True)
class Sizes:
    """The backbone and input sizes of one benchmark setting (None: the protocol's value)."""

    arch: str
    short_side: int  # detection image height; width 4/3 of it (synthetic_batch)
    rois: int | None  # detection RoIs sampled per image
    crop: int | None  # segmentation crop side
    seg_per_gpu: int | None  # segmentation crops per step


PUBLISHED = Sizes("vit_small_patch16", short_side=800, rois=None, crop=None, seg_per_gpu=None)
SMALL = Sizes("vit_tiny12_test", short_side=32, rois=8, crop=16, seg_per_gpu=2)


@dataclass
class Figures:
    """One protocol's measurement and what it implies for a full run."""

    s_per_iter: float
    iterations: int  # of a full run
    images_per_gpu: int
    batch: int  # the protocol's total batch
    input_size: str  # "HxW"
    precision: str
    peak_gpu_gib: float | None = None

    @property
    def gpus(self) -> int:
        return self.batch // self.images_per_gpu

    @property
    def hours(self) -> float:
        return self.s_per_iter * self.iterations / 3600


def timed(step: Callable[[], object], iters: int, device: torch.device) -> float:
    """The median seconds of `step` over `iters` calls after one warm-up call."""
    timings = []
    for _ in range(iters + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings[1:])


def detection_figures(sizes: Sizes, iters: int, device: torch.device) -> Figures:
    """Mask R-CNN on the ViT pyramid: the engine's build, optimizer, scaler and train_step."""
    protocol = detection_protocols.in_iterations(
        detection_protocols.PROTOCOLS[DETECTION](), COCO_TRAIN_IMAGES
    )
    if sizes.rois is not None:
        protocol = dataclasses.replace(protocol, roi_batch_per_image=sizes.rois)
    encoder, metadata = load_encoder(f"random:{sizes.arch}")
    detector, _ = build_loaded_detector(encoder, metadata, protocol, COCO_CLASSES)
    optimizer = detection_optimizer(detector, protocol)
    scaler = loss_scaler(protocol, device)
    detector.to(device).train()
    per_gpu = PER_GPU[DETECTION]
    images, targets = synthetic_batch(per_gpu, sizes.short_side, device)
    seconds = timed(
        lambda: detection_train_step(
            detector, optimizer, images, targets, protocol.base_lr, device, scaler
        ),
        iters,
        device,
    )
    height, width = images[0].shape[-2:]
    return Figures(
        seconds,
        protocol.max_iters,
        per_gpu,
        protocol.batch_size,
        f"{height}x{width}",
        "fp16" if scaler.is_enabled() else "fp32",
    )


def segmentation_figures(name: str, sizes: Sizes, iters: int, device: torch.device) -> Figures:
    """The ViT segmenter of `name`: the engine's build, optimizer and train_step (fp32)."""
    protocol = segmentation_protocols.PROTOCOLS[name]()
    if sizes.crop is not None:
        protocol = segmentation_protocols.with_crop(protocol, sizes.crop)
    encoder, _ = load_encoder(f"random:{sizes.arch}")
    model = build_segmenter(protocol.head, encoder, ADE20K_NUM_CLASSES, protocol).to(device)
    lr = protocol.lrs[0]
    optimizer = segmentation_engine.build_optimizer(model, protocol, lr)
    per_gpu = sizes.seg_per_gpu or PER_GPU[name]
    crop = protocol.crop
    images = torch.randn(per_gpu, 3, crop, crop, device=device)
    labels = torch.randint(0, ADE20K_NUM_CLASSES, (per_gpu, crop, crop), device=device)
    labels[:, : crop // 8] = IGNORE  # some unlabelled pixels, as ADE20K's "other"
    seconds = timed(
        lambda: segmentation_engine.train_step(
            model, optimizer, images, labels, lr, loss_mean=protocol.loss_mean
        ),
        iters,
        device,
    )
    return Figures(
        seconds, protocol.iterations, per_gpu, protocol.batch_size, f"{crop}x{crop}", "fp32"
    )


def measure(name: str, sizes: Sizes, iters: int, device: torch.device) -> Figures:
    """The figures of protocol `name`, with the peak GPU memory on CUDA."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)  # the new layers' initialisation and the synthetic inputs
    if name == DETECTION:
        figures = detection_figures(sizes, iters, device)
    else:
        figures = segmentation_figures(name, sizes, iters, device)
    if device.type == "cuda":
        figures.peak_gpu_gib = torch.cuda.max_memory_allocated(device) / 2**30
    return figures


def report_line(name: str, arch: str, figures: Figures) -> str:
    """One protocol's s/it, full-run estimate and peak memory, in words."""
    line = (
        f"{name}  {arch} {figures.images_per_gpu} x {figures.input_size} per GPU, "
        f"{figures.precision}: {figures.s_per_iter:.3f} s/iteration; full run "
        f"{figures.iterations:,} iterations at batch {figures.batch} ({figures.gpus} GPUs x "
        f"{figures.images_per_gpu}) -> {figures.hours:.1f} h"
    )
    if figures.peak_gpu_gib is not None:
        line += f"; peak GPU memory {figures.peak_gpu_gib:.2f} GiB"
    return line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.vit_dense_step",
        description=__doc__.split("\n")[0],
        allow_abbrev=False,
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="default cpu")
    parser.add_argument(
        "--published", action="store_true", help="ViT-S/16 at the published sizes (module doc)"
    )
    parser.add_argument("--iters", type=int, default=3, help="timed iterations (default 3)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--protocols", nargs="+", default=list(VIT_DENSE), choices=VIT_DENSE, help="subset"
    )
    args = parser.parse_args(argv)
    if args.iters < 1:
        parser.error("--iters must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sizes = PUBLISHED if args.published else SMALL
    print(
        "full-run estimates: s/iteration x the protocol's iterations; with data parallelism one "
        "GPU's iteration at its share of the batch is the iteration time (gradient all-reduce "
        "and data loading left out)",
        flush=True,
    )
    results = {}
    for name in args.protocols:
        results[name] = measure(name, sizes, args.iters, device)
        print(report_line(name, sizes.arch, results[name]), flush=True)
    setting = {
        "device": args.device,
        "published": args.published,
        "arch": sizes.arch,
        "iters": args.iters,
        "threads": torch.get_num_threads(),
    }
    figures = {
        name: {**dataclasses.asdict(f), "gpus": f.gpus, "full_run_hours": round(f.hours, 3)}
        for name, f in results.items()
    }
    print(json.dumps({**setting, "protocols": figures}))


if __name__ == "__main__":
    main()
