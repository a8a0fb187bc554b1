"""CLI: convert another library's checkpoint into a byol-bench export.

    python -m evaluate.convert SRC [--format auto|byol-haiku|moco|...]
                               [--network auto|online|target] [--arch NAME] [--out DIR_OR_FILE]

writes `backbone-<sha8>.pt` ({"format": "byol-bench.backbone/1", "state_dict", "metadata"}, the
layout of pretrain/checkpoint.py:export_backbone) and its `.json`: the encoder in torchvision key
names, `weights_sha256`, and metadata saying the method, the source format, the source file's
sha256, the architecture, the padding mode (the authors' BYOL needs TF "SAME") and the
preprocessing the weights expect. The formats and how each is recognised: evaluate/importers/
formats.py. Nothing from the source file is executed (evaluate/importers/safe_load.py).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from evaluate.importers import FORMATS, load_foreign
from evaluate.importers.load import NETWORKS
from pretrain.backbones import BACKBONES
from pretrain.checkpoint import EXPORT_FORMAT, weights_sha256
from results.atomic import write_atomic
from results.errors import ByolBenchError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConvertConfig:
    """What to convert and where the export goes."""

    src: str
    format: str = "auto"  # detected from the file's layout (evaluate/importers/formats.py)
    network: str = "auto"  # the authors' evaluated network: online (BYOL, MoCo), teacher (DINO)
    arch: str | None = None  # inferred from the weights' shapes when not given
    out: str | None = None  # directory or .pt path; default: the source file's directory


def export_path(out: str | None, src: Path, sha: str) -> Path:
    """`--out` as a file (ends in .pt) or a directory; default: beside the source file."""
    if out is not None and out.endswith(".pt"):
        return Path(out)
    directory = Path(out) if out is not None else src.parent
    return directory / f"backbone-{sha[:8]}.pt"


def write_export(path: Path, state_dict: dict[str, torch.Tensor], metadata: dict) -> Path:
    """The export_backbone layout at an arbitrary path (atomic .pt and its .json)."""
    state_dict = {name: tensor.detach().cpu().contiguous() for name, tensor in state_dict.items()}
    metadata = {**metadata, "path": str(path.resolve())}
    buffer = io.BytesIO()
    torch.save({"format": EXPORT_FORMAT, "state_dict": state_dict, "metadata": metadata}, buffer)
    write_atomic(path, buffer.getvalue())
    write_atomic(path.with_suffix(".json"), json.dumps(metadata, indent=2).encode())
    return path


def convert(config: ConvertConfig) -> Path:
    """Import `config.src` and write its export; returns the export's path."""
    src = Path(config.src)
    state_dict, metadata = load_foreign(
        src, format=config.format, network=config.network, arch=config.arch
    )
    sha = weights_sha256(state_dict)
    metadata["weights_sha256"] = sha
    path = write_export(export_path(config.out, src, sha), state_dict, metadata)
    log.info(
        "%s (%s, %s network, %s, padding %s) -> %s",
        src,
        metadata["source_format"],
        metadata["network"],
        metadata["arch"],
        metadata["padding"],
        path,
    )
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="python -m evaluate.convert",
        description="Convert another library's checkpoint into a byol-bench export\n"
        "(backbone-<sha8>.pt: torchvision key names, weights_sha256, method, source format and\n"
        "sha256, architecture, padding mode, preprocessing). Nothing from the file is executed.",
        epilog="formats (detected in this order):\n"
        + "\n".join(f"  {fmt.name}: {fmt.looks_like}" for fmt in FORMATS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", help="the checkpoint file to convert (.pkl, .pth, .pth.tar, .ckpt)")
    parser.add_argument(
        "--format",
        default="auto",
        choices=["auto", *(fmt.name for fmt in FORMATS)],
        help="the file's layout; auto (default) detects it (the list is below)",
    )
    parser.add_argument(
        "--network",
        default="auto",
        choices=NETWORKS,
        help="online or target (momentum/EMA/teacher) network; auto (default) takes the one the "
        "library's authors evaluate: online for BYOL and MoCo, the teacher for DINO",
    )
    parser.add_argument(
        "--arch",
        choices=list(BACKBONES),
        help="the architecture to check the weights against (default: inferred from the shapes)",
    )
    parser.add_argument(
        "--out",
        help="output directory (the file is backbone-<sha8>.pt) or a .pt path; default: the "
        "source file's directory",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    config = ConvertConfig(args.src, args.format, args.network, args.arch, args.out)
    try:
        path = convert(config)
    except ByolBenchError as error:
        sys.exit(f"error: {error}")
    print(path)


if __name__ == "__main__":
    main()
