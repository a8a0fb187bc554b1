"""Seconds per fine-tuning iteration of each detector (not a test; prints figures).

    python -m benchmarks.detection_step               # CPU: the test-sized setting
    python -m benchmarks.detection_step --arch resnet50 --size 480 --rois 512
    python -m benchmarks.detection_step --device cuda --arch resnet50 --size 800 --batch 8

Each model (transfer/detection/models.py: c4, fpn, mask-fpn, frozen BN) runs forward + backward +
SGD step on synthetic images (short side --size, aspect 4:3, 3 boxes with masks each), the same
calls as transfer/detection/train.py. The median over --iters iterations after one warm-up is
printed per model, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from evaluate.features import load_encoder
from transfer.detection.models import MODELS, DetectorSpec, build_detector


def synthetic_batch(batch: int, size: int, device: torch.device):
    """`batch` images [3, size, 4/3 size] with 3 boxes (and box-shaped masks) each."""
    height, width = size, size * 4 // 3
    images, targets = [], []
    for _ in range(batch):
        x0 = torch.randint(0, width // 2, (3,)).float()
        y0 = torch.randint(0, height // 2, (3,)).float()
        boxes = torch.stack([x0, y0, x0 + width // 4, y0 + height // 4], dim=1)
        masks = torch.zeros(3, height, width, dtype=torch.uint8)
        for k, (a, b, c, d) in enumerate(boxes.long().tolist()):
            masks[k, b:d, a:c] = 1
        images.append(torch.rand(3, height, width, device=device))
        targets.append(
            {
                "boxes": boxes.to(device),
                "labels": torch.tensor([1, 2, 3], device=device),
                "masks": masks.to(device),
            }
        )
    return images, targets


def seconds_per_iteration(model: str, args, device: torch.device) -> float:
    encoder, _ = load_encoder(f"random:{args.arch}")
    spec = DetectorSpec(
        model=model,
        num_classes=20,
        train_sizes=(args.size,),
        test_size=args.size,
        roi_batch_per_image=args.rois,
    )
    detector = build_detector(encoder, spec).to(device).train()
    parameters = [p for p in detector.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(parameters, lr=1e-3, momentum=0.9)
    images, targets = synthetic_batch(args.batch, args.size, device)
    if model != "mask-fpn":
        targets = [{k: v for k, v in t.items() if k != "masks"} for t in targets]
    timings = []
    for _ in range(args.iters + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = sum(detector(images, targets).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings[1:])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.detection_step",
        description=__doc__.split("\n")[0],
        allow_abbrev=False,
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="default cpu")
    parser.add_argument("--arch", default="resnet18", help="backbone (default resnet18)")
    parser.add_argument("--size", type=int, default=96, help="short side in pixels (default 96)")
    parser.add_argument("--batch", type=int, default=1, help="images per iteration (default 1)")
    parser.add_argument("--rois", type=int, default=8, help="sampled RoIs per image (default 8)")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations (default 3)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="subset of models")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    results = {}
    for model in args.models:
        results[model] = seconds_per_iteration(model, args, device)
        print(
            f"{model:9s} {args.arch} {args.size}px batch {args.batch} rois {args.rois}: "
            f"{results[model]:.3f} s/iteration",
            flush=True,
        )
    setting = {k: getattr(args, k) for k in ("device", "arch", "size", "batch", "rois", "iters")}
    print(json.dumps({**setting, "threads": torch.get_num_threads(), "s_per_iter": results}))


if __name__ == "__main__":
    main()
