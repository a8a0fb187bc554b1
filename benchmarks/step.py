"""BYOL training-step throughput, side by side with peer implementations, in one run (not a test).

    python -m benchmarks.step                  # CPU: ResNet-18, 64 px, batch 32
    python -m benchmarks.step --device cuda    # GPU: ResNet-50, 224 px, batch 256, bf16
    python -m benchmarks.step --arch vit_small_patch16 [--device cuda]   # DINO, SelfPatch, BYOL
                                               # on ViT-S/16 (benchmarks/vit_step.py)

Every contender trains the same backbone on the same two pre-made views of the same batch (the step
only; the loader has its own benchmark, benchmarks/data.py):

- byol-bench: `pretrain.train.train_step` on a Run built by `pretrain.train.build_run` (the real
  code path: BYOL module, LARS with multi-tensor ops, target EMA, online probe, channels_last, bf16
  autocast and torch.compile as configured).
- lightly: lightly's BYOL components as its documentation wires them (BYOLProjectionHead,
  BYOLPredictionHead, update_momentum, NegativeCosineSimilarity) with lightly's LARS, on a
  torchvision ResNet; same autocast as byol-bench, its default memory layout.
- byol-pytorch: lucidrains' `byol_pytorch.BYOL` wrapper (augmentation set to identity, so it trains
  on the given views; simplicial embeddings off, as in BYOL) with lightly's LARS (it ships no
  optimiser), update_moving_average after each step; same autocast.
- backbone-bound: the least any BYOL step costs: forward + backward of the backbone on both views
  and a no-grad forward of a second backbone on both views, nothing else (same layout, autocast
  and torch.compile setting as byol-bench, so the ratio measures what BYOL adds).

Peers come from `make bench` (`pip install -e '.[bench]'`); one that is not installed is reported as
missing. On CPU the contenders take turns (round-robin rounds, median per contender) so that load
from other processes hits all alike; on CUDA each runs alone and its peak memory is reported.
The last line printed is one JSON object: {"device": ..., "img_per_s": {...}, ...}.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from benchmarks.vit_step import BOUND_OF, VIT_BUILDERS, VIT_CONTENDERS
from pretrain import dist
from pretrain.backbones import build_backbone
from pretrain.config import PretrainConfig
from pretrain.train import build_run, memory_format, resolve_compile, train_step

CONTENDERS = ("byol-bench", "lightly", "byol-pytorch", "backbone-bound")
ARCH_FEATURES = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}


@dataclass(frozen=True)
class StepBenchConfig:
    """One measurement: same model, batch and input for every contender."""

    device: str = "cpu"
    arch: str = "resnet18"
    image_size: int = 64
    batch_size: int = 32
    precision: str = "fp32"  # fp32 | bf16 (autocast, every contender)
    compile: str = "auto"  # byol-bench's torch.compile: auto = on for CUDA
    channels_last: bool = True  # byol-bench and the bound; peers keep their default layout
    warmup_steps: int = 3
    steps: int = 5  # per round
    rounds: int = 3
    threads: int = 0  # CPU: torch threads (0 = torch's default)
    local_crops: int = 8  # ViTs: DINO's local crops per image
    local_size: int = 48  # ViTs: local crop size (GPU: DINO's 96)
    contenders: tuple[str, ...] = ()  # default: CONTENDERS, or VIT_CONTENDERS for a ViT arch


def gpu_defaults(arch: str | None = None) -> dict:
    """The GPU setting: ResNet-50, 224 px, batch 256 per GPU, bf16; for a ViT: 224/96 px crops,
    batch 128 per GPU (SelfPatch's README: 8 x 128)."""
    if arch and arch.startswith("vit_"):
        return dict(image_size=224, local_size=96, batch_size=128, precision="bf16", steps=10)
    return dict(arch="resnet50", image_size=224, batch_size=256, precision="bf16", steps=10)


def cpu_defaults(arch: str | None = None) -> dict:
    """ViTs on CPU: 96/48 px crops, batch 8 (a ViT-S step at 224 px takes seconds here)."""
    if arch and arch.startswith("vit_"):
        return dict(image_size=96, local_size=48, batch_size=8, steps=2, warmup_steps=1)
    return {}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(config: StepBenchConfig, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")


def byol_bench_step(config: StepBenchConfig, device: torch.device, views) -> Callable[[], None]:
    run_config = PretrainConfig(
        dataset="synthetic",
        image_size=config.image_size,
        backbone=config.arch,
        batch_size=config.batch_size,
        epochs=100,
        warmup_epochs=1,
        precision=config.precision,
        compile=config.compile,
        channels_last=config.channels_last,
        num_workers=0,
        train_subset_per_class=max(1, -(-config.batch_size // 10)),  # one batch of synthetic data
    )
    run = build_run(run_config, None, device, dist.DistInfo())
    run.model.train()
    layout = memory_format(run_config)
    view_1, view_2 = (v.contiguous(memory_format=layout) for v in views)
    labels = torch.zeros(config.batch_size, dtype=torch.long, device=device)

    def step() -> None:
        train_step(run, (view_1, view_2), labels)
        run.step += 1

    return step


def _torchvision_backbone(arch: str) -> nn.Module:
    import torchvision

    model = getattr(torchvision.models, arch)(weights=None)
    model.fc = nn.Identity()
    return model


def lightly_step(config: StepBenchConfig, device: torch.device, views) -> Callable[[], None]:
    from lightly.loss import NegativeCosineSimilarity
    from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum
    from lightly.utils.lars import LARS
    from lightly.utils.scheduler import cosine_schedule

    class LightlyBYOL(nn.Module):  # lightly's documented BYOL example, module for module
        def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
            super().__init__()
            self.backbone = backbone
            self.projection_head = BYOLProjectionHead(feature_dim, 4096, 256)
            self.prediction_head = BYOLPredictionHead(256, 4096, 256)
            self.backbone_momentum = copy.deepcopy(self.backbone)
            self.projection_head_momentum = copy.deepcopy(self.projection_head)
            deactivate_requires_grad(self.backbone_momentum)
            deactivate_requires_grad(self.projection_head_momentum)

        def forward(self, x):
            return self.prediction_head(self.projection_head(self.backbone(x).flatten(start_dim=1)))

        def forward_momentum(self, x):
            z = self.projection_head_momentum(self.backbone_momentum(x).flatten(start_dim=1))
            return z.detach()

    model = LightlyBYOL(_torchvision_backbone(config.arch), ARCH_FEATURES[config.arch]).to(device)
    criterion = NegativeCosineSimilarity()
    optimizer = LARS(model.parameters(), lr=0.2 * config.batch_size / 256, weight_decay=1.5e-6)
    view_1, view_2 = views
    state = {"step": 0}

    def step() -> None:
        momentum = cosine_schedule(state["step"], 10_000, 0.996, 1.0)
        update_momentum(model.backbone, model.backbone_momentum, m=momentum)
        update_momentum(model.projection_head, model.projection_head_momentum, m=momentum)
        with _autocast(config, device):
            p0, z0 = model(view_1), model.forward_momentum(view_1)
            p1, z1 = model(view_2), model.forward_momentum(view_2)
            loss = 0.5 * (criterion(p0, z1) + criterion(p1, z0))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        state["step"] += 1

    return step


def byol_pytorch_step(config: StepBenchConfig, device: torch.device, views) -> Callable[[], None]:
    from byol_pytorch import BYOL
    from lightly.utils.lars import LARS

    learner = BYOL(
        _torchvision_backbone(config.arch).to(device),
        image_size=config.image_size,
        hidden_layer="avgpool",
        augment_fn=nn.Identity(),
        use_simplicial_embeddings=False,
    )
    optimizer = LARS(learner.parameters(), lr=0.2 * config.batch_size / 256, weight_decay=1.5e-6)
    images = views[0]  # identity augmentation: both "views" are this batch

    def step() -> None:
        with _autocast(config, device):
            loss = learner(images)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        learner.update_moving_average()

    return step


def backbone_bound_step(config: StepBenchConfig, device: torch.device, views) -> Callable[[], None]:
    layout = torch.channels_last if config.channels_last else torch.contiguous_format
    online, _ = build_backbone(config.arch)
    target = copy.deepcopy(online).requires_grad_(False)
    online.to(device, memory_format=layout).train()
    target.to(device, memory_format=layout).train()
    view_1, view_2 = (v.contiguous(memory_format=layout) for v in views)
    if resolve_compile(dataclasses.replace(PretrainConfig(), compile=config.compile), device):
        online, target = torch.compile(online), torch.compile(target)

    def step() -> None:
        with _autocast(config, device):
            features_1, features_2 = online(view_1), online(view_2)
            with torch.no_grad():
                target(view_1), target(view_2)
        (features_1.float().sum() + features_2.float().sum()).backward()
        for parameter in online.parameters():
            parameter.grad = None

    return step


BUILDERS = {
    "byol-bench": byol_bench_step,
    "lightly": lightly_step,
    "byol-pytorch": byol_pytorch_step,
    "backbone-bound": backbone_bound_step,
}


def builder(name: str, arch: str):
    """The contender's step builder: ViT contenders (benchmarks/vit_step.py) for a ViT arch."""
    if arch.startswith("vit_") and name in VIT_BUILDERS:
        return VIT_BUILDERS[name]
    return BUILDERS[name]


def _timed_steps(step: Callable[[], None], steps: int, device: torch.device) -> float:
    _synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    _synchronize(device)
    return time.perf_counter() - started


def measure(config: StepBenchConfig) -> dict:
    """img/s (median over rounds) and peak memory per contender; missing peers are listed."""
    device = torch.device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(0)
    shape = (config.batch_size, 3, config.image_size, config.image_size)
    views = (torch.randn(shape, device=device), torch.randn(shape, device=device))
    steps, missing, seconds, peak_mem = {}, {}, {name: [] for name in config.contenders}, {}
    for name in config.contenders:
        try:
            steps[name] = builder(name, config.arch)(config, device, views)
        except ImportError as error:
            missing[name] = f"not installed ({error.name}); run `make bench`"
            continue
        if device.type == "cuda":  # alone on the device: warm up, measure, free
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            _timed_steps(steps[name], config.warmup_steps, device)
            for _ in range(config.rounds):
                seconds[name].append(_timed_steps(steps[name], config.steps, device))
            peak_mem[name] = torch.cuda.max_memory_allocated(device) / 2**30
            del steps[name]
        else:
            _timed_steps(steps[name], config.warmup_steps, device)
    for _ in range(config.rounds if device.type == "cpu" else 0):  # round-robin on CPU
        for name, step in steps.items():
            seconds[name].append(_timed_steps(step, config.steps, device))
    images = config.batch_size * config.steps
    img_per_s = {
        name: images / statistics.median(times) for name, times in seconds.items() if times
    }
    return {"img_per_s": img_per_s, "peak_mem_gib": peak_mem, "missing": missing}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def print_table(config: StepBenchConfig, result: dict) -> None:
    rates, vit = result["img_per_s"], config.arch.startswith("vit_")
    peers = [rates[name] for name in ("lightly", "byol-pytorch") if name in rates]
    fastest_peer = max(peers) if peers else None
    print(
        f"\npretraining step, {config.arch} {config.image_size}px batch {config.batch_size} "
        f"{config.precision} on {device_name(torch.device(config.device))}"
        + (f", {config.local_crops} local crops of {config.local_size}px" if vit else "")
    )
    print(f"{'contender':<16}{'img/s':>10}{'x bound':>10}{'x fastest peer':>16}{'peak GiB':>10}")
    for name in config.contenders:
        if name not in rates:
            print(f"{name:<16}{'-':>10}  {result['missing'].get(name, '')}")
            continue
        bound = (
            rates.get(BOUND_OF.get(name, "backbone-bound")) if vit else rates.get("backbone-bound")
        )
        ratio_bound = f"{rates[name] / bound:.2f}" if bound else "-"
        ratio_peer = f"{rates[name] / fastest_peer:.2f}" if fastest_peer else "-"
        memory = result["peak_mem_gib"].get(name)
        memory_text = f"{memory:.1f}" if memory is not None else "-"
        print(f"{name:<16}{rates[name]:>10.1f}{ratio_bound:>10}{ratio_peer:>16}{memory_text:>10}")


HELP = {  # StepBenchConfig field -> its flag's help text
    "arch": "backbone of every contender",
    "image_size": "input size in pixels",
    "batch_size": "images per step",
    "precision": "fp32 | bf16 (autocast, every contender)",
    "compile": "byol-bench's torch.compile: auto | on | off (auto: on for CUDA)",
    "channels_last": "byol-bench and the bound; peers keep their default layout",
    "warmup_steps": "untimed steps per contender",
    "steps": "timed steps per round",
    "rounds": "round-robin rounds on CPU",
    "threads": "CPU: torch threads (0: torch's default)",
    "local_crops": "ViTs: local crops per image (DINO: 8)",
    "local_size": "ViTs: local crop size in pixels (DINO: 96)",
}


def parse_config(argv: list[str] | None = None) -> StepBenchConfig:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.step",
        description="BYOL step img/s: byol-bench vs lightly vs byol-pytorch vs the backbone bound.",
        allow_abbrev=False,
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda: GPU defaults)")
    for field in dataclasses.fields(StepBenchConfig):
        if field.name in ("device", "contenders"):
            continue
        kind = type(field.default)
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            type=(lambda text: text.lower() in ("1", "true", "yes", "on"))
            if kind is bool
            else kind,
            default=None,
            help=f"{HELP[field.name]} (default {field.default}; GPU: "
            f"{gpu_defaults().get(field.name, field.default)})",
        )
    parser.add_argument(
        "--contenders",
        nargs="+",
        choices=sorted(set(CONTENDERS) | set(VIT_CONTENDERS)),
        default=None,
        help="what to time (default: all)",
    )
    args = parser.parse_args(argv)
    arch = args.arch or StepBenchConfig.arch
    defaults = gpu_defaults(arch) if args.device.startswith("cuda") else cpu_defaults(arch)
    values = {**defaults, **{k: v for k, v in vars(args).items() if v is not None}}
    vit = arch.startswith("vit_")
    values["contenders"] = tuple(
        values.get("contenders") or (VIT_CONTENDERS if vit else CONTENDERS)
    )
    return StepBenchConfig(**values)


def main(argv: list[str] | None = None) -> None:
    config = parse_config(argv)
    result = measure(config)
    print_table(config, result)
    print(
        json.dumps(
            {
                "device": device_name(torch.device(config.device)),
                "config": dataclasses.asdict(config),
                **result,
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
