"""Exports for external engines, one sub-command each:

    python -m transfer.export detectron2 --ckpt BACKBONE.pt [--out DIR]
    python -m transfer.export mmseg --ckpt BACKBONE.pt [--protocol P] [--nproc 8] ...

Each engine is a module with `main(argv)` (ENGINES): transfer/detection/detectron2_export.py and
transfer/segmentation/mmseg_export.py. Their flags: `python -m transfer.export <engine> --help`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

ENGINES = {  # sub-command -> the module whose main(argv) runs it
    "detectron2": "transfer.detection.detectron2_export",
    "mmseg": "transfer.segmentation.mmseg_export",
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(
        prog="python -m transfer.export",
        description="Export a backbone for an external engine (detectron2 or mmsegmentation).",
        epilog="Each engine's flags: python -m transfer.export <engine> --help",
        allow_abbrev=False,
    )
    parser.add_argument("engine", choices=list(ENGINES), help="the target engine")
    args = parser.parse_args(argv[:1])
    importlib.import_module(ENGINES[args.engine]).main(argv[1:])


if __name__ == "__main__":
    main()
