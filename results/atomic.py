"""THE atomic file writer of the project (no torch import: results/ is imported by everything).

`write_atomic(path, payload)`: the bytes go to a unique hidden temporary file in the same
directory, are fsync'ed and `os.replace`d into place, and the directory is fsync'ed; a reader (or
a crash at any moment) sees the old file or the new one, never a partial file (timm's checkpoint
saver does the same).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_atomic(path: str | os.PathLike, payload: bytes) -> Path:
    """Write `payload` to `path` via a temporary file, fsync and os.replace; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return path
