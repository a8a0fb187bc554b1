"""Exports for external engines, one sub-command each:

    python -m transfer.export detectron2 --ckpt BACKBONE.pt [--out DIR]  (detectron2_export.py)
    python -m transfer.export mmseg --ckpt BACKBONE.pt ...                (mmseg_export.py)

Each sub-command's own flags: `python -m transfer.export <engine> --help`.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(
        prog="python -m transfer.export",
        description="Export a backbone for an external engine (detectron2 or mmsegmentation).",
        epilog="Each engine's flags: python -m transfer.export <engine> --help",
    )
    parser.add_argument("engine", choices=["detectron2", "mmseg"], help="the target engine")
    args = parser.parse_args(argv[:1])
    if args.engine == "detectron2":
        from transfer.detection import detectron2_export

        detectron2_export.main(argv[1:])
    else:
        from transfer.segmentation import (
            mmseg_export,  # written beside this module by the segmentation work
        )

        mmseg_export.main(argv[1:])


if __name__ == "__main__":
    main()
